"""ChaCha20-Poly1305 AEAD, IETF variant (RFC 8439), pure Python.

ChaCha20 works on 32-bit words; every addition and rotation is masked to 32
bits so the two interpreters agree. Poly1305 uses plain big ints for the
130-bit accumulator: one multiply and one ``%`` per 16-byte block.

This module does the arithmetic only; sizes are checked in crypto/api.py and
the tag comparison is constant-time (crypto/ct.py).
"""
import struct

from shared_protocol.crypto.ct import bytes_eq

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_M32 = const(0xFFFFFFFF)
# "expand 32-byte k" as four little-endian words (RFC 8439 §2.3).
_SIGMA = const((0x61707865, 0x3320646e, 0x79622d32, 0x6b206574))
# 2^130 - 5, the Poly1305 prime (RFC 8439 §2.5).
_P1305 = const((1 << 130) - 5)
# r &= 0ffffffc0ffffffc0ffffffc0fffffff (RFC 8439 §2.5.1 clamp).
_R_CLAMP = const(0x0ffffffc0ffffffc0ffffffc0fffffff)
_2_128 = const(1 << 128)


def _block(key_words, counter, nonce_words):
    """One 64-byte keystream block (RFC 8439 §2.3). The 20 rounds are 10
    double rounds of four column and four diagonal quarter rounds (§2.1-2.3),
    unrolled on sixteen locals: list indexing in an interpreter costs more
    than the arithmetic."""
    M = _M32
    s = _SIGMA + tuple(key_words) + (counter & M,) + tuple(nonce_words)
    x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = s
    for _ in range(10):
        # column round
        x0 = (x0 + x4) & M
        x12 ^= x0
        x12 = ((x12 << 16) | (x12 >> 16)) & M
        x8 = (x8 + x12) & M
        x4 ^= x8
        x4 = ((x4 << 12) | (x4 >> 20)) & M
        x0 = (x0 + x4) & M
        x12 ^= x0
        x12 = ((x12 << 8) | (x12 >> 24)) & M
        x8 = (x8 + x12) & M
        x4 ^= x8
        x4 = ((x4 << 7) | (x4 >> 25)) & M
        x1 = (x1 + x5) & M
        x13 ^= x1
        x13 = ((x13 << 16) | (x13 >> 16)) & M
        x9 = (x9 + x13) & M
        x5 ^= x9
        x5 = ((x5 << 12) | (x5 >> 20)) & M
        x1 = (x1 + x5) & M
        x13 ^= x1
        x13 = ((x13 << 8) | (x13 >> 24)) & M
        x9 = (x9 + x13) & M
        x5 ^= x9
        x5 = ((x5 << 7) | (x5 >> 25)) & M
        x2 = (x2 + x6) & M
        x14 ^= x2
        x14 = ((x14 << 16) | (x14 >> 16)) & M
        x10 = (x10 + x14) & M
        x6 ^= x10
        x6 = ((x6 << 12) | (x6 >> 20)) & M
        x2 = (x2 + x6) & M
        x14 ^= x2
        x14 = ((x14 << 8) | (x14 >> 24)) & M
        x10 = (x10 + x14) & M
        x6 ^= x10
        x6 = ((x6 << 7) | (x6 >> 25)) & M
        x3 = (x3 + x7) & M
        x15 ^= x3
        x15 = ((x15 << 16) | (x15 >> 16)) & M
        x11 = (x11 + x15) & M
        x7 ^= x11
        x7 = ((x7 << 12) | (x7 >> 20)) & M
        x3 = (x3 + x7) & M
        x15 ^= x3
        x15 = ((x15 << 8) | (x15 >> 24)) & M
        x11 = (x11 + x15) & M
        x7 ^= x11
        x7 = ((x7 << 7) | (x7 >> 25)) & M
        # diagonal round
        x0 = (x0 + x5) & M
        x15 ^= x0
        x15 = ((x15 << 16) | (x15 >> 16)) & M
        x10 = (x10 + x15) & M
        x5 ^= x10
        x5 = ((x5 << 12) | (x5 >> 20)) & M
        x0 = (x0 + x5) & M
        x15 ^= x0
        x15 = ((x15 << 8) | (x15 >> 24)) & M
        x10 = (x10 + x15) & M
        x5 ^= x10
        x5 = ((x5 << 7) | (x5 >> 25)) & M
        x1 = (x1 + x6) & M
        x12 ^= x1
        x12 = ((x12 << 16) | (x12 >> 16)) & M
        x11 = (x11 + x12) & M
        x6 ^= x11
        x6 = ((x6 << 12) | (x6 >> 20)) & M
        x1 = (x1 + x6) & M
        x12 ^= x1
        x12 = ((x12 << 8) | (x12 >> 24)) & M
        x11 = (x11 + x12) & M
        x6 ^= x11
        x6 = ((x6 << 7) | (x6 >> 25)) & M
        x2 = (x2 + x7) & M
        x13 ^= x2
        x13 = ((x13 << 16) | (x13 >> 16)) & M
        x8 = (x8 + x13) & M
        x7 ^= x8
        x7 = ((x7 << 12) | (x7 >> 20)) & M
        x2 = (x2 + x7) & M
        x13 ^= x2
        x13 = ((x13 << 8) | (x13 >> 24)) & M
        x8 = (x8 + x13) & M
        x7 ^= x8
        x7 = ((x7 << 7) | (x7 >> 25)) & M
        x3 = (x3 + x4) & M
        x14 ^= x3
        x14 = ((x14 << 16) | (x14 >> 16)) & M
        x9 = (x9 + x14) & M
        x4 ^= x9
        x4 = ((x4 << 12) | (x4 >> 20)) & M
        x3 = (x3 + x4) & M
        x14 ^= x3
        x14 = ((x14 << 8) | (x14 >> 24)) & M
        x9 = (x9 + x14) & M
        x4 ^= x9
        x4 = ((x4 << 7) | (x4 >> 25)) & M
    return struct.pack("<16I", (x0 + s[0]) & M, (x1 + s[1]) & M, (x2 + s[2]) & M, (x3 + s[3]) & M,
                       (x4 + s[4]) & M, (x5 + s[5]) & M, (x6 + s[6]) & M, (x7 + s[7]) & M,
                       (x8 + s[8]) & M, (x9 + s[9]) & M, (x10 + s[10]) & M, (x11 + s[11]) & M,
                       (x12 + s[12]) & M, (x13 + s[13]) & M, (x14 + s[14]) & M, (x15 + s[15]) & M)


def _words(key, nonce):
    return struct.unpack("<8I", key), struct.unpack("<3I", nonce)


def chacha20_block(key, counter, nonce):
    kw, nw = _words(key, nonce)
    return _block(kw, counter, nw)


def _xor_chunks(key, counter, nonce, data):
    """ChaCha20 of ``data`` (RFC 8439 §2.4) as a list of 64-byte chunks
    (the last one shorter). ``data`` may be a memoryview: the only buffers
    made are the chunks, never a copy of the input (on a board every
    datagram-sized block is one more chance of a heap too fragmented for
    the next datagram; docs/node.md, "Fewer tuples, fewer copies, room
    that holds")."""
    kw, nw = _words(key, nonce)
    n = len(data)
    out = []
    for off in range(0, n, 64):
        ks = _block(kw, counter + off // 64, nw)
        m = min(64, n - off)
        # XOR a whole block as one integer: one big-int op instead of 64
        # interpreted byte operations.
        x = int.from_bytes(data[off:off + m], "little") ^ int.from_bytes(ks[:m] if m < 64 else ks, "little")
        out.append(x.to_bytes(m, "little"))
    return out


def chacha20_xor(key, counter, nonce, data):
    """ChaCha20 encryption (RFC 8439 §2.4): data XOR keystream from ``counter``."""
    return b"".join(_xor_chunks(key, counter, nonce, data))


def poly1305(key, msg):
    """Poly1305 one-time authenticator (RFC 8439 §2.5)."""
    r = int.from_bytes(key[:16], "little") & _R_CLAMP
    s = int.from_bytes(key[16:32], "little")
    acc = 0
    p = _P1305
    n = len(msg)
    for off in range(0, n, 16):
        block = msg[off:off + 16]
        # append the 0x01 byte above the block's top (§2.5.1)
        acc = (acc + int.from_bytes(block, "little") + (1 << (8 * len(block)))) * r % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _poly_padded(acc, r, data):
    """Poly1305 blocks over ``data`` zero-padded to 16 bytes, as the AEAD
    lays out the associated data and the ciphertext (§2.8). A zero pad does
    not change a little-endian block's value, so every block, the last one
    too, is its bytes plus 2^128 (§2.5.1's 0x01 byte above 16 bytes)."""
    p = _P1305
    for off in range(0, len(data), 16):
        acc = (acc + int.from_bytes(data[off:off + 16], "little") + _2_128) * r % p
    return acc


def _tag(otk, aad, ct_parts, ct_len):
    """The AEAD tag (§2.8) over aad | pad16 | ciphertext | pad16 |
    le64(len aad) | le64(len ciphertext), fed block by block: the MAC input
    is never built. ``ct_parts`` are the ciphertext's pieces, each but the
    last a multiple of 16 bytes long."""
    r = int.from_bytes(otk[:16], "little") & _R_CLAMP
    acc = _poly_padded(0, r, aad)
    for part in ct_parts:
        acc = _poly_padded(acc, r, part)
    # the lengths block: le64(len aad) | le64(len ct) as one 128-bit integer
    acc = (acc + len(aad) + (ct_len << 64) + _2_128) * r % _P1305
    return ((acc + int.from_bytes(otk[16:32], "little")) & (_2_128 - 1)).to_bytes(16, "little")


def encrypt(key, nonce, plaintext, aad):
    """ciphertext || tag (RFC 8439 §2.8)."""
    # §2.6: the Poly1305 key is the first 32 bytes of block 0; data uses 1..
    otk = chacha20_block(key, 0, nonce)[:32]
    parts = _xor_chunks(key, 1, nonce, plaintext)
    parts.append(_tag(otk, aad, parts, len(plaintext)))
    return b"".join(parts)


def decrypt(key, nonce, sealed, aad):
    """Plaintext, or None if the tag does not verify. Nothing is decrypted
    before the tag checks out, so unauthenticated plaintext never exists.
    ``sealed`` may be any bytes-like object; it is read through a
    memoryview, never copied."""
    n = len(sealed) - TAG_SIZE
    if n < 0:
        return None
    mv = memoryview(sealed)
    otk = chacha20_block(key, 0, nonce)[:32]
    if not bytes_eq(_tag(otk, aad, (mv[:n],), n), bytes(mv[n:])):
        return None
    return b"".join(_xor_chunks(key, 1, nonce, mv[:n]))
