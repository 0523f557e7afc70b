"""X25519 Diffie-Hellman (RFC 7748 §5), pure Python.

The Montgomery ladder runs exactly 255 steps for every scalar, and swaps by
arithmetic masking instead of an ``if`` on a secret bit (RFC 7748 §5, the
cswap function), so the sequence of operations does not depend on the key.
"""
from shared_protocol.crypto.field import P, inv

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# (A - 2) / 4 for curve25519, A = 486662 (RFC 7748 §4.1, §5 ladder's a24).
_A24 = const(121665)
# Highest bit index of a clamped scalar: bit 254 is always set (RFC 7748 §5).
_LADDER_BITS = const(255)
KEY_SIZE = 32
BASE_POINT = b"\x09" + b"\x00" * 31


def clamp(k):
    """decodeScalar25519 (RFC 7748 §5): clear the 3 low bits (a multiple of the
    cofactor 8, so small-subgroup points map to 0), clear bit 255, set bit 254."""
    n = int.from_bytes(k, "little")
    n &= ~7
    n &= (1 << 255) - 1
    n |= 1 << 254
    return n


def _decode_u(u):
    # RFC 7748 §5: implementations MUST mask the most significant bit of the
    # final byte; non-canonical values (>= p) are reduced, not rejected.
    return int.from_bytes(u, "little") & ((1 << 255) - 1)


def scalarmult(k, u):
    """X25519(k, u) as 32 bytes. Inputs are 32-byte strings (checked by the API)."""
    kn = clamp(k)
    x1 = _decode_u(u) % P
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    p = P
    a24 = _A24
    for t in range(_LADDER_BITS - 1, -1, -1):
        bit = (kn >> t) & 1
        swap ^= bit
        # cswap by masking: mask is 0 or all ones, no branch on the key bit.
        mask = -swap
        d = mask & (x2 ^ x3)
        x2 ^= d
        x3 ^= d
        d = mask & (z2 ^ z3)
        z2 ^= d
        z3 ^= d
        swap = bit
        a = x2 + z2
        aa = a * a % p
        b = x2 - z2
        bb = b * b % p
        e = aa - bb
        c = x3 + z3
        dd = x3 - z3
        da = dd * a % p
        cb = c * b % p
        x3 = da + cb
        x3 = x3 * x3 % p
        z3 = da - cb
        z3 = x1 * (z3 * z3 % p) % p
        x2 = aa * bb % p
        z2 = e * (aa + a24 * e) % p
    mask = -swap
    d = mask & (x2 ^ x3)
    x2 ^= d
    d = mask & (z2 ^ z3)
    z2 ^= d
    return (x2 * inv(z2) % p).to_bytes(32, "little")


def scalarmult_base(k):
    return scalarmult(k, BASE_POINT)
