"""The pure-Python backend: what the boards run, and the reference the host
backend is compared against. Methods take validated arguments (crypto/api.py
checks sizes) and report failure by return value, not by exception, so both
backends have one narrow contract."""
from shared_protocol.crypto import chacha20poly1305, ed25519
from shared_protocol.crypto.sha512 import sha512_digest


class PureBackend:
    name = "pure-python"

    # X25519 is imported when used: a node needs it for its link's
    # handshake (and re-keys), and a board can drop it in between
    # (firmware/platform.py, HANDSHAKE_ONLY).
    def x25519(self, secret, public):
        from shared_protocol.crypto import x25519
        return x25519.scalarmult(secret, public)

    def x25519_base(self, secret):
        from shared_protocol.crypto import x25519
        return x25519.scalarmult_base(secret)

    def ed25519_public(self, seed):
        return ed25519.public_key(seed)

    def ed25519_sign(self, seed, msg, pub):
        return ed25519.sign(seed, msg, pub)

    def ed25519_verify(self, pub, msg, sig):
        return ed25519.verify(pub, msg, sig)

    def ed25519_pk_to_x25519(self, pub):
        return ed25519.public_to_x25519(pub)

    def ed25519_seed_to_x25519(self, seed):
        return ed25519.seed_to_x25519(seed)

    def aead_encrypt(self, key, nonce, plaintext, aad):
        return chacha20poly1305.encrypt(key, nonce, plaintext, aad)

    def aead_decrypt(self, key, nonce, sealed, aad):
        return chacha20poly1305.decrypt(key, nonce, sealed, aad)

    def sha512(self, data):
        return sha512_digest(data)
