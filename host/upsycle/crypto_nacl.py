"""The host's crypto backend: libsodium through PyNaCl.

Host-only: shared code never imports this module. The host process calls
``install()`` once at start (the proxy, the CLI) to route
``shared_protocol.crypto.api`` through libsodium; nothing else changes, since
the API checks sizes and maps failures to the same typed errors for both
backends.
"""
import hmac as _hmac

from nacl import bindings as _b
from nacl.exceptions import CryptoError as _NaclError
from nacl.exceptions import RuntimeError as _NaclRuntimeError

from shared_protocol.crypto import api


class NaclBackend:
    name = "pynacl"

    def x25519(self, secret, public):
        try:
            return _b.crypto_scalarmult(secret, public)
        except (_NaclError, _NaclRuntimeError):
            # libsodium refuses an all-zero result (small-order point)
            return None

    def x25519_base(self, secret):
        return _b.crypto_scalarmult_base(secret)

    def ed25519_public(self, seed):
        pk, _ = _b.crypto_sign_seed_keypair(seed)
        return pk

    def ed25519_sign(self, seed, msg, pub):
        _, sk = _b.crypto_sign_seed_keypair(seed)
        return _b.crypto_sign(msg, sk)[:64]

    def ed25519_verify(self, pub, msg, sig):
        try:
            _b.crypto_sign_open(sig + msg, pub)
            return True
        except (_NaclError, _NaclRuntimeError, ValueError):
            return False

    def ed25519_pk_to_x25519(self, pub):
        try:
            return _b.crypto_sign_ed25519_pk_to_curve25519(pub)
        except (_NaclError, _NaclRuntimeError, ValueError):
            return None

    def ed25519_seed_to_x25519(self, seed):
        _, sk = _b.crypto_sign_seed_keypair(seed)
        return _b.crypto_sign_ed25519_sk_to_curve25519(sk)

    def aead_encrypt(self, key, nonce, plaintext, aad):
        return _b.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)

    def aead_decrypt(self, key, nonce, sealed, aad):
        try:
            return _b.crypto_aead_chacha20poly1305_ietf_decrypt(bytes(sealed), aad, nonce, key)
        except (_NaclError, _NaclRuntimeError):
            return None

    def sha512(self, data):
        return _b.crypto_hash_sha512(data)

    def hmac_sha256(self, key, msg):
        # OpenSSL's HMAC through CPython's one-shot hmac.digest: RFC 2104 as
        # crypto/hkdf.py builds it (the same bytes, tests/host/
        # test_crypto_differential.py), ~40x faster than its pure-Python XOR
        # of the padded key; a Noise handshake takes 12 of them per side.
        return _hmac.digest(key, msg, "sha256")


def install():
    """Route shared_protocol.crypto.api through libsodium; returns the old backend."""
    return api.use_backend(NaclBackend())
