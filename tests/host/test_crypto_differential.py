"""The pure-Python backend against libsodium (PyNaCl) on random inputs, and the
libsodium backend against the same API contract."""
import hashlib

import pytest
from hypothesis import given, settings, strategies as st
from nacl import bindings as nb

from shared_protocol.crypto import api, chacha20poly1305, ed25519, hkdf, x25519
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


@FEW
@given(st.binary(max_size=200), msgs)
def test_hmac_sha256_in_c_matches_the_boards(key, m):
    # keys past the 64-byte block are hashed first (RFC 2104 §2): sizes both sides of it
    assert NaclBackend().hmac_sha256(key, m) == hkdf.hmac_sha256(key, m)


@FEW
@given(st.binary(max_size=80), key32, st.binary(max_size=60), st.integers(1, 200))
def test_hkdf_and_the_noise_handshake_agree_across_backends(salt, ikm, info, n):
    """The proxy's handshake (C HMAC once crypto_nacl is installed) derives
    the bytes a board's (hkdf.py's HMAC) does, so either end may run either."""
    from shared_protocol.noise.handshake import Handshake
    from shared_protocol.session.secure_client import PROLOGUE

    def run():
        i = Handshake(True, ikm, salt[:32].ljust(32, b"e"), PROLOGUE)
        r = Handshake(False, bytes(31) + b"\x07", bytes(32 - len(info[:32])) + info[:32], PROLOGUE)
        m1 = i.write_message(b"")
        r.read_message(m1)
        m2 = r.write_message(b"")
        i.read_message(m2)
        m3 = i.write_message(b"hello")
        r.read_message(m3)
        return api.hkdf(salt, ikm, info, n), m1 + m2 + m3, [cs.k for cs in i.split() + r.split()]

    old = api.use_backend(PureBackend())
    try:
        assert api.hmac_sha256 is hkdf.hmac_sha256   # the boards' path: no dispatch
        pure = run()
        api.use_backend(NaclBackend())
        assert api.hmac_sha256 != hkdf.hmac_sha256
        assert run() == pure
    finally:
        api.use_backend(old)


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
