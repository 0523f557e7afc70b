"""The pure-Python backend against libsodium (PyNaCl) on random inputs, and the
libsodium backend against the same API contract."""
import hashlib

import pytest
from hypothesis import given, settings, strategies as st
from nacl import bindings as nb

from shared_protocol.crypto import api, chacha20poly1305, ed25519, x25519
from shared_protocol.crypto.errors import AuthenticationFailed, BadPublicKey, BadSignature
from shared_protocol.crypto.pure import PureBackend
from shared_protocol.crypto.sha512 import sha512
from upsycle.crypto_nacl import NaclBackend

key32 = st.binary(min_size=32, max_size=32)
msgs = st.binary(max_size=600)
FEW = settings(max_examples=60, deadline=None)


@FEW
@given(msgs)
def test_sha512_matches_hashlib(m):
    assert sha512(m).digest() == hashlib.sha512(m).digest()


@FEW
@given(key32, key32)
def test_x25519_matches_libsodium(k, u):
    try:
        ref = nb.crypto_scalarmult(k, u)
    except Exception:
        # libsodium refuses all-zero output; so does our API
        with pytest.raises(BadPublicKey):
            api.x25519(k, u)
        return
    assert x25519.scalarmult(k, u) == ref
    assert x25519.scalarmult_base(k) == nb.crypto_scalarmult_base(k)


@FEW
@given(key32, msgs)
def test_ed25519_sign_matches_libsodium(seed, m):
    pk, sk = nb.crypto_sign_seed_keypair(seed)
    assert ed25519.public_key(seed) == pk
    sig = ed25519.sign(seed, m)
    assert sig == nb.crypto_sign(m, sk)[:64]
    assert ed25519.verify(pk, m, sig)
    assert ed25519.public_to_x25519(pk) == nb.crypto_sign_ed25519_pk_to_curve25519(pk)
    assert ed25519.seed_to_x25519(seed) == nb.crypto_sign_ed25519_sk_to_curve25519(sk)


def _nacl_verify(pk, m, sig):
    try:
        nb.crypto_sign_open(sig + m, pk)
        return True
    except Exception:
        return False


@FEW
@given(key32, msgs, st.integers(0, 63), st.integers(1, 255))
def test_ed25519_verify_agrees_on_corrupted_signatures(seed, m, pos, flip):
    pk, sk = nb.crypto_sign_seed_keypair(seed)
    sig = bytearray(nb.crypto_sign(m, sk)[:64])
    sig[pos] ^= flip
    assert ed25519.verify(pk, m, bytes(sig)) == _nacl_verify(pk, m, bytes(sig)) == False  # noqa: E712


@FEW
@given(key32, key32, msgs)
def test_ed25519_verify_agrees_on_random_keys_and_signatures(pk, half, m):
    sig = half + bytes(32)  # S = 0 is canonical, so decoding paths are exercised
    assert ed25519.verify(pk, m, sig) == _nacl_verify(pk, m, sig)
    assert ed25519.public_to_x25519(pk) == NaclBackend().ed25519_pk_to_x25519(pk)


@FEW
@given(key32, st.binary(min_size=12, max_size=12), msgs, st.binary(max_size=80))
def test_aead_matches_libsodium(k, n, m, aad):
    ct = nb.crypto_aead_chacha20poly1305_ietf_encrypt(m, aad, n, k)
    assert chacha20poly1305.encrypt(k, n, m, aad) == ct
    assert chacha20poly1305.decrypt(k, n, ct, aad) == m


@pytest.mark.parametrize("backend", [PureBackend(), NaclBackend()], ids=["pure", "nacl"])
def test_both_backends_behind_one_api(backend):
    old = api.use_backend(backend)
    try:
        seed = bytes(range(32))
        pub = api.ed25519_public(seed)
        sig = api.ed25519_sign(seed, b"reading")
        api.ed25519_verify(pub, b"reading", sig)
        with pytest.raises(BadSignature):
            api.ed25519_verify(pub, b"readinG", sig)
        sealed = api.aead_encrypt(bytes(32), bytes(12), b"21.5C", b"ad")
        assert api.aead_decrypt(bytes(32), bytes(12), sealed, b"ad") == b"21.5C"
        with pytest.raises(AuthenticationFailed):
            api.aead_decrypt(bytes(32), bytes(12), sealed, b"AD")
        with pytest.raises(BadPublicKey):
            api.x25519(b"\x01" * 32, bytes(32))
        assert api.sha512(b"abc") == hashlib.sha512(b"abc").digest()
        assert api.backend_name() == backend.name
    finally:
        api.use_backend(old)
