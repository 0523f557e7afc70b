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

# Curve constant d = -121665/121666 (RFC 8032 §5.1).
_D = 0x52036cee2b6ffe738cc740797779e89800700a4d4141d8ab75eb4dca135978a3
_D2 = (2 * _D) % P
# sqrt(-1) = 2^((p-1)/4) (RFC 8032 §5.1.3 step 3).
_SQRT_M1 = 0x2b8324804fc1df0b2b4d00993dfbd7a72f431806ad2fe478c4ee1b274a0ea0b0
# Group order L = 2^252 + 27742317777372353535851937790883648493 (§5.1).
L = 2 ** 252 + 27742317777372353535851937790883648493
_BX = 0x216936d3cd6e53fec0a4e231fdd6dc5c692cc7609525a7b2c9562d608f25d51a
_BY = 0x6666666666666666666666666666666666666666666666666666666666666658
BASE = (_BX, _BY, 1, _BX * _BY % P)
IDENTITY = (0, 1, 1, 0)

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
# A 4-bit window: 16 table entries (a small, fixed amount of RAM on a board)
# against 64 additions per multiplication instead of 253.
_WINDOW = 4
_WINDOWS = 64  # 256 bits / 4; scalars here are < 2^256


def _add(p1, p2):
    # RFC 8032 §5.1.4, "add-2008-hwcd-3" for a = -1.
    X1, Y1, Z1, T1 = p1
    X2, Y2, Z2, T2 = p2
    p = P
    A = (Y1 - X1) * (Y2 - X2) % p
    B = (Y1 + X1) * (Y2 + X2) % p
    C = T1 * _D2 % p * T2 % p
    D = 2 * Z1 * Z2 % p
    E = B - A
    F = D - C
    G = D + C
    H = B + A
    return (E * F % p, G * H % p, F * G % p, E * H % p)


def _double(p1):
    # RFC 8032 §5.1.4, "dbl-2008-hwcd".
    X1, Y1, Z1, _ = p1
    p = P
    A = X1 * X1 % p
    B = Y1 * Y1 % p
    C = 2 * Z1 * Z1 % p
    H = A + B
    t = X1 + Y1
    E = H - t * t % p
    G = A - B
    F = C + G
    return (E * F % p, G * H % p, F * G % p, E * H % p)


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


_base_table = None


def _scalarmult(table, n):
    """[n]P for 0 <= n < 2^256, P given by its window table."""
    q = IDENTITY
    for w in range(_WINDOWS - 1, -1, -1):
        q = _double(_double(_double(_double(q))))
        q = _add(q, _select(table, (n >> (w * _WINDOW)) & 15))
    return q


def scalarmult_base(n):
    global _base_table
    if _base_table is None:
        _base_table = _table(BASE)
    return _scalarmult(_base_table, n)


def _double_scalarmult_vartime(a, ta, b, pb):
    """[a]PA + [b]PB for public scalars (verification only); PA by its table."""
    tb = _table(pb)
    q = IDENTITY
    for w in range(_WINDOWS - 1, -1, -1):
        q = _double(_double(_double(_double(q))))
        i = (a >> (w * _WINDOW)) & 15
        if i:
            q = _add(q, ta[i])
        i = (b >> (w * _WINDOW)) & 15
        if i:
            q = _add(q, tb[i])
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
    if len(sig) != SIGNATURE_SIZE or len(pub) != PUBLIC_KEY_SIZE:
        return False
    S = int.from_bytes(sig[32:], "little")
    if S >= L:
        return False
    A = decode_point(pub)
    if A is None or _is_small_order(A):
        return False
    R = sig[:32]
    k = _h_int(R, pub, msg) % L
    # [S]B + [k](-A) must equal R; comparing encodings also rejects a
    # non-canonical R (it can never be produced by encode_point).
    global _base_table
    if _base_table is None:
        _base_table = _table(BASE)
    check = _double_scalarmult_vartime(S, _base_table, k, _neg(A))
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
