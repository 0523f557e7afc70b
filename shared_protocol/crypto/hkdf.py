"""HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869), on ``hashlib.sha256``.

Board firmware has no ``hmac`` module, so HMAC is built here from the hash.
SHA-256 itself is native on both interpreters.
"""
import hashlib

HASH_SIZE = 32
_BLOCK = 64
# RFC 5869 §2.3: L <= 255 * HashLen.
HKDF_MAX_OUTPUT = 255 * HASH_SIZE


def sha256(data):
    return hashlib.sha256(data).digest()


def _xor(key, pad):
    # RFC 2104 §2: the key XOR ipad (0x36) or opad (0x5C) repeated: made
    # from the byte, not from two 64-byte pads kept for good (192 bytes of
    # a board's heap)
    return bytes(x ^ pad for x in key)


def hmac_sha256(key, msg):
    # RFC 2104 §2: keys longer than the block are hashed first, then padded.
    if len(key) > _BLOCK:
        key = sha256(key)
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha256(_xor(key, 0x36))
    inner.update(msg)
    outer = hashlib.sha256(_xor(key, 0x5C))
    outer.update(inner.digest())
    return outer.digest()


# ``mac``: the HMAC-SHA256 to use (crypto/api.py passes the backend's, C on
# the host); the same bytes either way.

def hkdf_extract(salt, ikm, mac=hmac_sha256):
    # RFC 5869 §2.2: an absent salt is HashLen zero bytes.
    if not salt:
        salt = b"\x00" * HASH_SIZE
    return mac(salt, ikm)


def hkdf_expand(prk, info, length, mac=hmac_sha256):
    # RFC 5869 §2.3: T(i) = HMAC(PRK, T(i-1) | info | i)
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = mac(prk, t + info + bytes((i,)))
        out += t
        i += 1
    return out[:length]


def hkdf(salt, ikm, info, length, mac=hmac_sha256):
    return hkdf_expand(hkdf_extract(salt, ikm, mac), info, length, mac)
