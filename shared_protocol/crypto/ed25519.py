"""Ed25519 signatures (RFC 8032 §5.1), pure Python.

Points are kept in extended homogeneous coordinates (X, Y, Z, T) with
x = X/Z, y = Y/Z, xy = T/Z (RFC 8032 §5.1.4), so additions and doublings need
no inversion; one inversion happens when a point is encoded.

Scalar multiplication uses a fixed 4-bit window: 63 windows of 4 doublings
and one addition each, the addend picked from a 16-entry table by scanning
every entry with arithmetic masks. The sequence of field operations is the
same for every scalar, so the secret scalar (signing) and the secret nonce do
not steer branches or table indices; the big-int routines underneath remain
variable-time (see crypto/__init__.py). Verification handles public data
only and uses a joint (Straus) double-scalar multiplication to share the
doublings.

Verification follows libsodium's strict rules so both backends agree on every
input: S must be canonical (S < L, §5.1.7 step 1), the public key must decode
canonically and must not have small order, and the check is the cofactorless
equation [S]B = R + [k]A, compared on the encoding of R.
"""
from shared_protocol.crypto.field import P, inv
from shared_protocol.crypto.sha512 import sha512

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Curve constant d = -121665/121666 (RFC 8032 §5.1).
_D = const(0x52036cee2b6ffe738cc740797779e89800700a4d4141d8ab75eb4dca135978a3)
_D2 = const(0x2406d9dc56dffce7198e80f2eef3d13000e0149a8283b156ebd69b9426b2f159)   # 2d mod p
# sqrt(-1) = 2^((p-1)/4) (RFC 8032 §5.1.3 step 3).
_SQRT_M1 = const(0x2b8324804fc1df0b2b4d00993dfbd7a72f431806ad2fe478c4ee1b274a0ea0b0)
# Group order L = 2^252 + 27742317777372353535851937790883648493 (§5.1).
L = const(0x1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed)
_BX = const(0x216936d3cd6e53fec0a4e231fdd6dc5c692cc7609525a7b2c9562d608f25d51a)
_BY = const(0x6666666666666666666666666666666666666666666666666666666666666658)
# Constants written out, not computed at import (a frozen image keeps a
# literal in flash); tests/shared/test_crypto_vectors.py checks them.
_BXY = const(0x67875f0fd78b766566ea4e8e64abe37d20f09f80775152f56dde8ab3a5b7dda3)   # x*y mod p
BASE = (_BX, _BY, 1, _BXY)
IDENTITY = (0, 1, 1, 0)
_M256 = const((1 << 256) - 1)

_SEED_SIZE = const(32)
_PUBLIC_KEY_SIZE = const(32)
_SIGNATURE_SIZE = const(64)
# A 4-bit window: 16 table entries (a small, fixed amount of RAM on a board)
# against 64 additions per multiplication instead of 253.
_WINDOW = 4
_WINDOWS = const(64)  # 256 bits / 4; scalars here are < 2^256


def _add(p1, p2):
    # RFC 8032 §5.1.4, "add-2008-hwcd-3" for a = -1.
    X1, Y1, Z1, T1 = p1
    X2, Y2, Z2, T2 = p2
    p = P
    A = (Y1 - X1) * (Y2 - X2) % p
    B = (Y1 + X1) * (Y2 + X2) % p
    C = T1 * _D2 % p * T2 % p
    D = 2 * Z1 * Z2 % p
    # E, H in A's and B's places and F, G in C's and D's: each product's
    # remainder (an 80-byte buffer on a 32-bit board, see _compact) dies
    # as soon as it is used instead of living to the return: up to four
    # fewer alive at once in every addition of a signature or check
    A, B = B - A, B + A     # E, H
    C, D = D - C, D + C     # F, G
    return (A * C % p, D * B % p, C * D % p, A * B % p)


def _double(p1):
    # RFC 8032 §5.1.4, "dbl-2008-hwcd".
    X1, Y1, Z1, _ = p1
    p = P
    A = X1 * X1 % p
    B = Y1 * Y1 % p
    C = 2 * Z1 * Z1 % p
    # names reused as in _add, so what is used up is freed at once
    X1 = X1 + Y1            # t
    A, B = A + B, A - B     # H, G
    X1 = A - X1 * X1 % p    # E = H - t^2
    C = C + B               # F = C + G
    return (X1 * C % p, B * A % p, C * B % p, X1 * A % p)


def _neg(p1):
    X, Y, Z, T = p1
    return ((-X) % P, Y, Z, (-T) % P)


def _table(pt):
    t = [IDENTITY, pt]
    for _ in range(14):
        t.append(_add(t[-1], pt))
    return t


def _select(table, idx):
    """table[idx] read by touching every entry, masks instead of indexing."""
    X = Y = Z = T = 0
    for i in range(16):
        # mask is all ones when i == idx, else 0, computed without a branch
        diff = i ^ idx
        mask = ((diff - 1) >> 8) & 1
        mask = -mask
        e = table[i]
        X |= e[0] & mask
        Y |= e[1] & mask
        Z |= e[2] & mask
        T |= e[3] & mask
    return (X, Y, Z, T)


# [i]B for i = 0..15, the base point's window table, as constants: computed
# at run time, its big ints were kept among the garbage of the first
# signature check and pinned small blocks all over a board's heap (frozen
# into an image they cost no heap at all). Each entry is the affine point
# (Z = 1) packed into one int, x + (y << 256); T = xy is computed for the
# entry a window picks (_base_entry). 16 ints of 512 bits rather than 45 of
# 256 plus 16 tuples: about 2 KB less of a board's heap with .mpy modules
# (the module 8,656 -> 6,704 bytes on the 32-bit unix port), and the
# constant-time pick masks one int per entry instead of four.
# tests/shared/test_crypto_vectors.py checks every entry against
# _table(BASE).
_BASE_TABLE = (
    0x00000000000000000000000000000000000000000000000000000000000000010000000000000000000000000000000000000000000000000000000000000000,
    0x6666666666666666666666666666666666666666666666666666666666666658216936d3cd6e53fec0a4e231fdd6dc5c692cc7609525a7b2c9562d608f25d51a,
    0x2260cdf3092329c21da25ee8c9a21f5697390f51643851560e5f46ae6af8a3c936ab384c9f5a046c3d043b7d1833e7ac080d8e4515d7a45f83c5a14e2843ce0e,
    0x1267b1d177ee69aba126a18e60269ef79f16ec176724030402c3684878f5b4d467ae9c4a22928f491ff4ae743edac83a6343981981624886ac62485fd3f8e25c,
    0x47d0e827cb1595e1470eb88580d5716c4cf22832ea2f0ff0df38ab61ca32112f203da8db56cff1468325d4b87a3520f91a739ec193ce1547493aa657c4c9f870,
    0x5f4825b298feae6fe02c6e148992466631282eca89430b5d10d21f83d676c8ed49fda73eade3587bfcef7cf7d12da5de5c2819f93e1be1a591409cc0322ef233,
    0x054de3fc2886d8a11db709a7fd4f7d77f9417c06944d6b60c1d27ad0f9497ef44c9797ba7a45601c62aeacc0dd0a29bea1e599826c7b4427783a741a7dcbf23d,
    0x31c563e32b47d52f87ce6468dd36ad41f0882b46f7abf23d12c4c4b59f4062b814568685fcf4bd4ee9e3ee194b1d810783e809f3bbf1ce955855981af50e4107,
    0x21d30600c9e573796ead6f09668af38f81783cfc621ee4931e2f5ba9fc37b9b46742e15f97d771b642862d5cf84ecf93eb3ac67b80698b993b87fdbc08a584c8,
    0x7f3d23c2c2dd0df4b2befce956f2d2fd1f789013236e4430c74e44845522f1c0357cc970c80071651bf336e06f9422b886d80e5c2e4e0294d3e023065185715c,
    0x637ffcaa7a1b2477c8e44d54c898bfcf2576a6853de0e843ba8874b06ae87b2c602c797e30ca6d754470b60ed2bc8677207e8e4ed836f81444951f224877f94f,
    0x2d9082313f21ab975a6f7ce340ff0fce1258591c3c9c58d4308f2dc36a03371314e528b1154be417b6cf078dd6712438d381a5b2c593d552ff2fd2c1207cf3cb,
    0x4070ce608bce8022e71d6c4e637825b856487eb45273966733d281dc2e2de4f94719e17e016e5d355ecf70e00ca249db3295bf2385c13b42ae62fe6678f0902d,
    0x12dbb00ded538b7478466022d2da89b83740cfb2289a272387efe1aeea401f80107427e0d5f366ccdb33adf0282d304f8843e3e88d22b7b83780e073b7c05fed,
    0x4e50256f50c4cb8115bad17acbb702bfa74898e819b6265c8369fd98899c2839205f3b42f5884aaf048c7a895ccabb15d8dee6d83e39832aa38e7353b58515b9,
    0x12cbfb2d04ff22f55162f70164d29331ace5af18a19a9aa1946d4cc4ad2e5cdf4f162deaec2ec435dc5ac6f95d20419ed9631374770189cb90617f3e66a18dc1,
)


def _scalarmult(table, n, select=_select):
    """[n]P for 0 <= n < 2^256, P given by its window table (read by
    ``select``: _select for a table of points, _select_base for the packed
    _BASE_TABLE)."""
    q = IDENTITY
    for w in range(_WINDOWS - 1, -1, -1):
        q = _double(_double(_double(_double(q))))
        q = _add(q, select(table, (n >> (w * _WINDOW)) & 15))
    return q


def _base_entry(v):
    """The extended point of a packed _BASE_TABLE entry."""
    x = v & _M256
    y = v >> 256
    return (x, y, 1, x * y % P)


def _select_base(t, idx):
    """The point of the packed entry t[idx], read by touching all 16 (as
    _select: masks instead of indexing)."""
    v = 0
    for i in range(16):
        # all ones when i == idx, else 0, computed without a branch
        v |= t[i] & -((((i ^ idx) - 1) >> 8) & 1)
    return _base_entry(v)


def scalarmult_base(n):
    return _scalarmult(_BASE_TABLE, n, _select_base)


def _compact(pt):
    """The same point with each coordinate in a big int of its own size.
    MicroPython keeps the remainder of ``x * y % p`` in the digit buffer of
    the 510-bit product (80 bytes of heap where 32 do; its mpz modulo sizes
    the remainder by the dividend), and ``| 0`` copies it into a right-sized
    one: 48 bytes less per coordinate of a point that stays alive through a
    whole multiplication (the 32-bit unix port). Same values, so the same
    arithmetic and checks."""
    return (pt[0] | 0, pt[1] | 0, pt[2] | 0, pt[3] | 0)


def _double_scalarmult_vartime(a, b, pb):
    """[a]B + [b]PB for public scalars (verification only): B by its 4-bit
    window table (_BASE_TABLE), PB by a 2-bit window of [1..3]PB. Three points
    instead of a 16-entry table: about 3 KB less heap at the peak of a check
    (the tightest moment of a board's heap, tools/bench/bench_rig.py) for
    some 20 more additions; the two made here kept compact (_compact)."""
    p2 = _compact(_double(pb))
    tb = (IDENTITY, pb, p2, _compact(_add(p2, pb)))
    q = IDENTITY
    for w in range(2 * _WINDOWS - 1, -1, -1):
        q = _double(_double(q))
        i = (b >> (2 * w)) & 3
        if i:
            q = _add(q, tb[i])
        if not w & 1:
            # bits 2w .. 2w+3 of a: its 4-bit window, now that q is aligned to it
            i = (a >> (2 * w)) & 15
            if i:
                q = _add(q, _base_entry(_BASE_TABLE[i]))
    return q


def encode_point(pt):
    # RFC 8032 §5.1.2: y little-endian, the low bit of x in bit 255.
    X, Y, Z, _ = pt
    zi = inv(Z)
    x = X * zi % P
    y = Y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def decode_point(s):
    """RFC 8032 §5.1.3; None if s is not a canonical encoding of a curve point."""
    n = int.from_bytes(s, "little")
    x_0 = n >> 255
    y = n & ((1 << 255) - 1)
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (_D * y * y + 1) % P
    # x = (u/v)^((p+3)/8) computed as u v^3 (u v^7)^((p-5)/8) (§5.1.3 step 2)
    v3 = v * v % P * v % P
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8, P) % P
    vx2 = v * x % P * x % P
    if vx2 == u:
        pass
    elif vx2 == (-u) % P:
        x = x * _SQRT_M1 % P
    else:
        return None
    if x == 0 and x_0 == 1:
        return None
    if (x & 1) != x_0:
        x = P - x
    return (x, y, 1, x * y % P)


def _is_small_order(pt):
    # [8]pt is the identity iff pt lies in the small (torsion) subgroup.
    q = _double(_double(_double(pt)))
    return q[0] % P == 0 and (q[1] - q[2]) % P == 0


def _h_int(*parts):
    h = sha512()
    for x in parts:
        h.update(x)
    return int.from_bytes(h.digest(), "little")


def expand_seed(seed):
    """(secret scalar, nonce prefix) from the 32-byte seed (§5.1.5 steps 1-3)."""
    h = sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key(seed):
    a, _ = expand_seed(seed)
    return encode_point(scalarmult_base(a))


def sign(seed, msg, pub=None):
    """RFC 8032 §5.1.6. ``pub`` may be passed to skip recomputing it."""
    a, prefix = expand_seed(seed)
    if pub is None:
        pub = encode_point(scalarmult_base(a))
    r = _h_int(prefix, msg) % L
    R = encode_point(scalarmult_base(r))
    k = _h_int(R, pub, msg) % L
    S = (r + k * a) % L
    return R + S.to_bytes(32, "little")


def verify(pub, msg, sig):
    """RFC 8032 §5.1.7 with libsodium's strictness; True or False."""
    if len(sig) != _SIGNATURE_SIZE or len(pub) != _PUBLIC_KEY_SIZE:
        return False
    S = int.from_bytes(sig[32:], "little")
    if S >= L:
        return False
    A = decode_point(pub)
    if A is None or _is_small_order(A):
        return False
    # only -A is used from here on: A itself is not kept through the
    # multiplication (a board's heap is at its tightest there)
    A = _compact(_neg(A))
    R = sig[:32]
    k = _h_int(R, pub, msg) % L
    # [S]B + [k](-A) must equal R; comparing encodings also rejects a
    # non-canonical R (it can never be produced by encode_point).
    check = _double_scalarmult_vartime(S, k, A)
    return encode_point(check) == R


def public_to_x25519(pub):
    """Montgomery u of an Ed25519 public key: u = (1 + y) / (1 - y) (RFC 7748
    §4.1, the birational map). None for keys that do not decode or are not
    in the prime-order subgroup ([L]A = identity, as libsodium requires), so a
    member can never be handed a weak DH key. Costs one scalar
    multiplication: callers convert a member's key once and keep the result."""
    A = decode_point(pub)
    if A is None or _is_small_order(A):
        return None
    q = _scalarmult(_table(A), L)
    if q[0] % P != 0 or (q[1] - q[2]) % P != 0:
        return None
    y = A[1]
    return ((1 + y) * inv((1 - y) % P) % P).to_bytes(32, "little")


def seed_to_x25519(seed):
    """X25519 secret matching public_to_x25519(public_key(seed)): the clamped
    Ed25519 scalar (the first half of SHA-512(seed), §5.1.5), returned
    clamped as libsodium does, so both backends give the same bytes."""
    a, _ = expand_seed(seed)
    return a.to_bytes(32, "little")
