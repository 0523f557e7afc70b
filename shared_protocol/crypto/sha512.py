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
test vectors pin them. They are kept as big-endian bytes and unpacked when
used: as 88 ints, each a heap big int of some 40 bytes on a 32-bit board, a
.mpy build of this module held 3.5 KB more of a board's heap for as long as
it ran (6,432 against 2,960 bytes on the 32-bit unix port); unpacking one
word per round adds two small allocations to the dozens of big ints a
round makes anyway (some 8% slower there). A frozen image keeps either
form in flash.
"""
import struct

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

_M = const(0xFFFFFFFFFFFFFFFF)
_K = (
    const(b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17")
)
_H0 = (
    const(b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79")
)

_BLOCK = 128
_DIGEST_SIZE = const(64)


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
    unpack = struct.unpack_from
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
        t1 = hh + S1 + ch + unpack(">Q", K, t << 3)[0] + w[i]
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

    digest_size = _DIGEST_SIZE
    block_size = _BLOCK

    def __init__(self, data=b""):
        self._h = list(struct.unpack(">8Q", _H0))
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
