"""ChaCha20-Poly1305 AEAD, IETF variant (RFC 8439), pure Python.

ChaCha20 works on 32-bit words; every addition and rotation is masked to 32
bits so the two interpreters agree. Poly1305 uses plain big ints for the
130-bit accumulator: one multiply and one ``%`` per 16-byte block.

This module does the arithmetic only; sizes are checked in crypto/api.py and
the tag comparison is constant-time (crypto/ct.py).
"""
import struct

from shared_protocol.crypto.ct import bytes_eq

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_M32 = 0xFFFFFFFF
# "expand 32-byte k" as four little-endian words (RFC 8439 §2.3).
_SIGMA = (0x61707865, 0x3320646e, 0x79622d32, 0x6b206574)
# 2^130 - 5, the Poly1305 prime (RFC 8439 §2.5).
_P1305 = (1 << 130) - 5
# r &= 0ffffffc0ffffffc0ffffffc0fffffff (RFC 8439 §2.5.1 clamp).
_R_CLAMP = 0x0ffffffc0ffffffc0ffffffc0fffffff


def _block(key_words, counter, nonce_words):
    """One 64-byte keystream block (RFC 8439 §2.3)."""
    M = _M32
    s = list(_SIGMA) + list(key_words) + [counter & M] + list(nonce_words)
    x = list(s)
    for _ in range(10):
        # column rounds then diagonal rounds (§2.3: 20 rounds = 10 double rounds)
        for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                           (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
            # quarter round, §2.1
            xa = (x[a] + x[b]) & M
            xd = x[d] ^ xa
            xd = ((xd << 16) | (xd >> 16)) & M
            xc = (x[c] + xd) & M
            xb = x[b] ^ xc
            xb = ((xb << 12) | (xb >> 20)) & M
            xa = (xa + xb) & M
            xd ^= xa
            xd = ((xd << 8) | (xd >> 24)) & M
            xc = (xc + xd) & M
            xb ^= xc
            xb = ((xb << 7) | (xb >> 25)) & M
            x[a] = xa
            x[b] = xb
            x[c] = xc
            x[d] = xd
    return struct.pack("<16I", *[(x[i] + s[i]) & M for i in range(16)])


def _words(key, nonce):
    return struct.unpack("<8I", key), struct.unpack("<3I", nonce)


def chacha20_block(key, counter, nonce):
    kw, nw = _words(key, nonce)
    return _block(kw, counter, nw)


def chacha20_xor(key, counter, nonce, data):
    """ChaCha20 encryption (RFC 8439 §2.4): data XOR keystream from ``counter``."""
    kw, nw = _words(key, nonce)
    n = len(data)
    out = []
    for off in range(0, n, 64):
        ks = _block(kw, counter + off // 64, nw)
        m = min(64, n - off)
        # XOR a whole block as one integer: one big-int op instead of 64
        # interpreted byte operations.
        x = int.from_bytes(data[off:off + m], "little") ^ int.from_bytes(ks[:m], "little")
        out.append(x.to_bytes(m, "little"))
    return b"".join(out)


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


def _pad16(n):
    return b"\x00" * ((16 - n % 16) % 16)


def _mac_data(aad, ct):
    # §2.8: aad | pad16 | ciphertext | pad16 | le64(len aad) | le64(len ct)
    return b"".join((aad, _pad16(len(aad)), ct, _pad16(len(ct)),
                     struct.pack("<QQ", len(aad), len(ct))))


def encrypt(key, nonce, plaintext, aad):
    """ciphertext || tag (RFC 8439 §2.8)."""
    # §2.6: the Poly1305 key is the first 32 bytes of block 0; data uses 1..
    otk = chacha20_block(key, 0, nonce)[:32]
    ct = chacha20_xor(key, 1, nonce, plaintext)
    return ct + poly1305(otk, _mac_data(aad, ct))


def decrypt(key, nonce, sealed, aad):
    """Plaintext, or None if the tag does not verify. Nothing is decrypted
    before the tag checks out (§4: do not release unauthenticated plaintext)."""
    if len(sealed) < TAG_SIZE:
        return None
    ct = sealed[:-TAG_SIZE]
    otk = chacha20_block(key, 0, nonce)[:32]
    if not bytes_eq(poly1305(otk, _mac_data(aad, ct)), sealed[-TAG_SIZE:]):
        return None
    return chacha20_xor(key, 1, nonce, ct)
