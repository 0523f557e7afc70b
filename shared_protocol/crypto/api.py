"""The one crypto API of UPSYCLE. Protocol code calls only these functions.

Two backends implement it: ``PureBackend`` (crypto/pure.py, pure Python, the
default and what the boards run) and the host's libsodium backend
(host/upsycle/crypto_nacl.py), which the host installs with ``use_backend``.
Shared code never imports the host backend: imports go host -> shared only.

Randomness comes through a platform hook, ``set_random_source(fn)`` with
``fn(n) -> n bytes``: boards and hosts default to ``os.urandom``; the
WebAssembly VM has none and must be given one (tests give a seeded one).
Sans-I/O protocol objects take random bytes as arguments and never call this
themselves; only the runners do.

Every size is checked here, so a wrong-length key or an oversized message is
a ``cerr.CryptoUsageError`` on both backends alike.
"""
from shared_protocol.crypto import hkdf as _hkdf
from shared_protocol.crypto.ct import bytes_eq
from shared_protocol.crypto import errors as cerr
from shared_protocol.crypto.pure import PureBackend

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

_X25519_KEY_SIZE = const(32)
_ED25519_SEED_SIZE = const(32)
_ED25519_PUBLIC_KEY_SIZE = const(32)
_ED25519_SIGNATURE_SIZE = const(64)
_AEAD_KEY_SIZE = const(32)
_AEAD_NONCE_SIZE = const(12)
AEAD_TAG_SIZE = 16
# Largest plaintext we seal or sign in one call. Noise caps a transport
# message at 65535 bytes (Noise spec §3); stored publications are smaller. A
# bound also keeps a hostile length from making a board allocate without end.
MESSAGE_SIZE_MAX = 65535
# Largest random request: keys and nonces are 32 bytes or less.
_RANDOM_REQUEST_MAX = const(1024)

_backend = PureBackend()
_random = None


def use_backend(backend):
    """Install a backend (an object with PureBackend's methods); returns the old one.

    A backend may also offer ``hmac_sha256(key, msg)``: the host's runs in C
    (a Noise handshake is 12 HMACs, most of its cost in pure Python). It
    replaces this module's function, so the boards, whose backend has none,
    keep calling hkdf.py's directly with no dispatch in between."""
    global _backend, hmac_sha256
    old = _backend
    _backend = backend
    hmac_sha256 = getattr(backend, "hmac_sha256", None) or _hkdf.hmac_sha256
    return old


def current_backend():
    return _backend


def backend_name():
    return _backend.name


def set_random_source(fn):
    global _random
    _random = fn


def random_bytes(n):
    if not 0 < n <= _RANDOM_REQUEST_MAX:
        raise cerr.CryptoUsageError(message=__debug__ and "random request of %d bytes is out of range" % n)
    fn = _random
    if fn is None:
        try:
            import os
            fn = os.urandom
        except (ImportError, AttributeError):
            fn = None
    if fn is None:
        raise cerr.NoRandomSource(message=__debug__ and "this platform has no os.urandom; call set_random_source() first")
    try:
        out = fn(n)
    except (AttributeError, NotImplementedError, OSError) as e:
        raise cerr.NoRandomSource(message=__debug__ and "random source failed: %s" % e)
    if len(out) != n:
        raise cerr.NoRandomSource(message=__debug__ and "random source returned %d bytes, wanted %d" % (len(out), n))
    return bytes(out)


def _need(name, value, size):
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise cerr.CryptoUsageError(message=__debug__ and "%s must be %d bytes" % (name, size))


def _need_msg(name, value):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise cerr.CryptoUsageError(message=__debug__ and "%s must be bytes" % name)
    if len(value) > MESSAGE_SIZE_MAX:
        raise cerr.CryptoUsageError(message=__debug__ and "%s of %d bytes exceeds %d" % (name, len(value), MESSAGE_SIZE_MAX))


# -- X25519 (RFC 7748) --

def x25519_public(secret):
    _need("X25519 secret", secret, _X25519_KEY_SIZE)
    return _backend.x25519_base(bytes(secret))


def x25519(secret, public):
    """Shared secret; cerr.BadPublicKey when it is all zeros, i.e. the peer sent a
    small-order point (RFC 7748 §6.1 lets us check; libsodium always does)."""
    _need("X25519 secret", secret, _X25519_KEY_SIZE)
    _need("X25519 public key", public, _X25519_KEY_SIZE)
    out = _backend.x25519(bytes(secret), bytes(public))
    if out is None or bytes_eq(out, b"\x00" * 32):
        raise cerr.BadPublicKey(message=__debug__ and "X25519 public key has small order")
    return out


# -- Ed25519 (RFC 8032) --

def ed25519_public(seed):
    _need("Ed25519 seed", seed, _ED25519_SEED_SIZE)
    return _backend.ed25519_public(bytes(seed))


def ed25519_sign(seed, msg, pub=None):
    _need("Ed25519 seed", seed, _ED25519_SEED_SIZE)
    _need_msg("message to sign", msg)
    if pub is not None:
        _need("Ed25519 public key", pub, _ED25519_PUBLIC_KEY_SIZE)
    else:
        pub = _backend.ed25519_public(bytes(seed))
    return _backend.ed25519_sign(bytes(seed), bytes(msg), bytes(pub))


def ed25519_verify(pub, msg, sig):
    """Returns None; raises cerr.BadSignature unless sig is valid for (pub, msg)."""
    _need("Ed25519 public key", pub, _ED25519_PUBLIC_KEY_SIZE)
    _need_msg("signed message", msg)
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != _ED25519_SIGNATURE_SIZE:
        raise cerr.BadSignature(message=__debug__ and "signature must be 64 bytes")
    if not _backend.ed25519_verify(bytes(pub), bytes(msg), bytes(sig)):
        raise cerr.BadSignature(message=__debug__ and "Ed25519 signature does not verify")


def ed25519_pk_to_x25519(pub):
    _need("Ed25519 public key", pub, _ED25519_PUBLIC_KEY_SIZE)
    out = _backend.ed25519_pk_to_x25519(bytes(pub))
    if out is None:
        raise cerr.BadPublicKey(message=__debug__ and "Ed25519 public key is invalid or has small order")
    return out


def ed25519_seed_to_x25519(seed):
    _need("Ed25519 seed", seed, _ED25519_SEED_SIZE)
    return _backend.ed25519_seed_to_x25519(bytes(seed))


# -- ChaCha20-Poly1305 IETF (RFC 8439) --

def aead_encrypt(key, nonce, plaintext, aad=b""):
    _need("AEAD key", key, _AEAD_KEY_SIZE)
    _need("AEAD nonce", nonce, _AEAD_NONCE_SIZE)
    _need_msg("plaintext", plaintext)
    _need_msg("associated data", aad)
    return _backend.aead_encrypt(bytes(key), bytes(nonce), bytes(plaintext), bytes(aad))


def aead_decrypt(key, nonce, sealed, aad=b""):
    _need("AEAD key", key, _AEAD_KEY_SIZE)
    _need("AEAD nonce", nonce, _AEAD_NONCE_SIZE)
    _need_msg("associated data", aad)
    if not isinstance(sealed, (bytes, bytearray, memoryview)) or len(sealed) > MESSAGE_SIZE_MAX + AEAD_TAG_SIZE:
        raise cerr.CryptoUsageError(message=__debug__ and "sealed message is not bytes or exceeds %d" % (MESSAGE_SIZE_MAX + AEAD_TAG_SIZE))
    if len(sealed) < AEAD_TAG_SIZE:
        raise cerr.AuthenticationFailed(message=__debug__ and "sealed message shorter than its tag")
    # sealed goes as it is (a memoryview of a datagram, say): the pure
    # backend reads it in place, the host's converts it itself
    out = _backend.aead_decrypt(bytes(key), bytes(nonce), sealed, bytes(aad))
    if out is None:
        raise cerr.AuthenticationFailed(message=__debug__ and "AEAD tag does not verify")
    return out


# -- hashes and key derivation (hashlib.sha256 is native on both) --

def sha512(data):
    return _backend.sha512(bytes(data))


sha256 = _hkdf.sha256
hmac_sha256 = _hkdf.hmac_sha256


def hkdf(salt, ikm, info, length):
    if not 0 < length <= _hkdf.HKDF_MAX_OUTPUT:
        raise cerr.CryptoUsageError(message=__debug__ and "HKDF output length %d out of range" % length)
    return _hkdf.hkdf(salt, ikm, info, length, hmac_sha256)


def constant_time_eq(a, b):
    return bytes_eq(a, b)
