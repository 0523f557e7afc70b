"""SHA-512 in pure Python (FIPS 180-4 §6.4), for Ed25519 on the boards.

MicroPython's hashlib has only sha256, and Ed25519 (RFC 8032 §5.1) is defined
over SHA-512, so the boards need this. Inputs here are short (a signature
hashes a key, a nonce and a message of a few hundred bytes), so clarity and a
small footprint matter more than speed. Every word is masked to 64 bits so
MicroPython and CPython compute the same thing; on a 32-bit board these are
heap-allocated big ints, which is the main cost of an Ed25519 signature there.

The round constants are the first 64 bits of the fractional parts of the cube
roots of the first 80 primes (FIPS 180-4 §4.2.3), the initial hash value the
square roots of the first 8 (§5.3.5); both were generated, not typed, and the
test vectors pin them.
"""
import struct

_M = 0xFFFFFFFFFFFFFFFF
_K = (
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
)
_H0 = (
    0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
    0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
)

_BLOCK = 128
DIGEST_SIZE = 64


# The message schedule as a ring of its last 16 words (FIPS 180-4 §6.4.2
# step 1 needs W[t-16..t-1] only), reused by every block: 80 words would be
# live at once, 64-bit heap big ints on a 32-bit board (some 2.5 KB at the
# tightest moment of a signature check, where a board's heap ran out,
# tools/bench/bench_rig.py); 16 are about 0.5 KB. Emptied after each block.
# Not reentrant, and nothing here yields, so one is enough.
_W = [0] * 16


def _compress(h, buf, off):
    """Hash the block buf[off:off + 128] into h (a list of 8 words) in place."""
    w = _W
    w[0:16] = struct.unpack_from(">16Q", buf, off)
    M = _M
    a, b, c, d, e, f, g, hh = h
    K = _K
    for t in range(80):
        i = t & 15
        if t >= 16:
            # W[t] into the slot of W[t-16], which it replaces
            x = w[(t - 15) & 15]
            s0 = ((x >> 1) | (x << 63)) ^ ((x >> 8) | (x << 56)) ^ (x >> 7)
            x = w[(t - 2) & 15]
            s1 = ((x >> 19) | (x << 45)) ^ ((x >> 61) | (x << 3)) ^ (x >> 6)
            w[i] = (w[i] + (s0 & M) + w[(t - 7) & 15] + (s1 & M)) & M
        S1 = (((e >> 14) | (e << 50)) ^ ((e >> 18) | (e << 46)) ^ ((e >> 41) | (e << 23))) & M
        ch = (e & f) ^ (~e & g)
        t1 = hh + S1 + ch + K[t] + w[i]
        S0 = (((a >> 28) | (a << 36)) ^ ((a >> 34) | (a << 30)) ^ ((a >> 39) | (a << 25))) & M
        maj = (a & b) ^ (a & c) ^ (b & c)
        hh = g
        g = f
        f = e
        e = (d + t1) & M
        d = c
        c = b
        b = a
        a = (t1 + S0 + maj) & M
    h[0] = (h[0] + a) & M
    h[1] = (h[1] + b) & M
    h[2] = (h[2] + c) & M
    h[3] = (h[3] + d) & M
    h[4] = (h[4] + e) & M
    h[5] = (h[5] + f) & M
    h[6] = (h[6] + g) & M
    h[7] = (h[7] + hh) & M
    # Drop the 16 words (heap big ints on a 32-bit board): kept in _W until
    # the next block, they would pin small blocks all over the heap.
    for t in range(16):
        w[t] = 0


class sha512:
    """hashlib-style object: update() then digest(). digest() does not finalise
    the object, so update() may continue afterwards, as with hashlib."""

    digest_size = DIGEST_SIZE
    block_size = _BLOCK

    def __init__(self, data=b""):
        self._h = list(_H0)
        self._buf = bytearray(_BLOCK)   # a partial block, _len % _BLOCK bytes of it
        self._len = 0
        if data:
            self.update(data)

    def update(self, data):
        n = len(data)
        if not n:
            return
        used = self._len % _BLOCK
        self._len += n
        buf = self._buf
        h = self._h
        i = 0
        if used:
            take = min(_BLOCK - used, n)
            buf[used:used + take] = data[:take]
            i = take
            if used + take < _BLOCK:
                return
            _compress(h, buf, 0)
        while n - i >= _BLOCK:
            _compress(h, data, i)
            i += _BLOCK
        if i < n:
            buf[0:n - i] = data[i:]

    def digest(self):
        # §5.1.2 padding: 0x80, zeros, then the bit length as a 128-bit integer.
        used = self._len % _BLOCK
        h = list(self._h)
        blk = bytearray(_BLOCK)
        blk[0:used] = self._buf[0:used]
        blk[used] = 0x80
        if used >= _BLOCK - 16:
            _compress(h, blk, 0)
            blk = bytearray(_BLOCK)
        bitlen = self._len * 8
        struct.pack_into(">QQ", blk, _BLOCK - 16, (bitlen >> 64) & _M, bitlen & _M)
        _compress(h, blk, 0)
        return struct.pack(">8Q", *h)

    def hexdigest(self):
        return self.digest().hex()


def sha512_digest(data):
    return sha512(data).digest()
