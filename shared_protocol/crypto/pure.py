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

    # The rest are the modules' own functions, with the same arguments and
    # results: a method of its own would only add a call, and each costs a
    # board heap for its bytecode and function object.
    ed25519_public = staticmethod(ed25519.public_key)
    ed25519_sign = staticmethod(ed25519.sign)
    ed25519_verify = staticmethod(ed25519.verify)
    ed25519_pk_to_x25519 = staticmethod(ed25519.public_to_x25519)
    ed25519_seed_to_x25519 = staticmethod(ed25519.seed_to_x25519)
    aead_encrypt = staticmethod(chacha20poly1305.encrypt)
    aead_decrypt = staticmethod(chacha20poly1305.decrypt)
    sha512 = staticmethod(sha512_digest)
