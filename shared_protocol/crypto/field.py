"""Arithmetic in GF(p), p = 2^255 - 19, shared by X25519 and Ed25519.

Plain Python integers: CPython and MicroPython both have arbitrary-precision
ints, and a 256x256-bit multiply plus one ``%`` is faster in the interpreter
than any limb arithmetic written in Python. Inversion uses Fermat's little
theorem, pow(a, p - 2, p) (RFC 7748 §5 and RFC 8032 §5.1 both allow this), so
there is no secret-dependent branching in our code; the big-int routines
underneath are not constant-time (see crypto/__init__.py for what that means).
"""

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# 2^255 - 19, written out: a literal is a constant a frozen image keeps in
# flash, where the expression made a big int in the heap at import
P = const(0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffed)
_P_MINUS_2 = const(P - 2)


def inv(a):
    return pow(a, _P_MINUS_2, P)


def from_le(b):
    return int.from_bytes(b, "little")


def to_le32(n):
    return (n % P).to_bytes(32, "little")
