"""Host fast path of the Noise transport: CipherState through libsodium.

A secure link seals and opens every session message (a publish, its ack, the
delivery and its ack: four AEAD calls per message each way). The shared
CipherState (shared_protocol/noise/symmetric.py) goes through the crypto API
(size checks, backend dispatch, copies), which costs more than the cipher
itself for a 100-byte message. ``HostCipherState`` holds the same key and
nonce and calls libsodium's ChaCha20-Poly1305 (IETF, Noise §12.3) through
PyNaCl's cffi module directly, into a per-thread scratch buffer.

Same bytes and same semantics as CipherState (nonce counting, §5.1: a failed
decryption does not advance the nonce; NONCE_MAX; typed errors):
tests/host/test_wire_fast.py checks them against each other. Host only:
shared code never imports this module.
"""
import threading

from shared_protocol.crypto.api import AEAD_TAG_SIZE, MESSAGE_SIZE_MAX
from shared_protocol.crypto.errors import CryptoUsageError
from shared_protocol.noise.errors import DecryptFailed, NoiseUsageError
from shared_protocol.noise.symmetric import NONCE_MAX, CipherState

try:
    from nacl._sodium import ffi as _ffi, lib as _lib   # PyNaCl's cffi binding of libsodium
except ImportError:   # pragma: no cover - PyNaCl is a pinned dependency of the host
    _ffi = _lib = None

# Largest sealed message: a Noise message (65535) plus its tag; the scratch
# buffer is allocated once per thread at this size.
_SCRATCH = MESSAGE_SIZE_MAX + AEAD_TAG_SIZE
_local = threading.local()
_ZERO4 = b"\x00\x00\x00\x00"
_ZERO32 = b"\x00" * 32


def _scratch():
    s = getattr(_local, "s", None)
    if s is None:
        s = _local.s = (_ffi.new("unsigned char[]", _SCRATCH), _ffi.new("unsigned long long *"))
    return s


def _nonce(n):
    # Noise §12.3 (ChaChaPoly): 32 bits of zeros, then the 64-bit nonce little-endian.
    return _ZERO4 + n.to_bytes(8, "little")


class HostCipherState:
    """CipherState with a key, for transport messages (after Split())."""

    __slots__ = ("k", "n")

    def __init__(self, k, n=0):
        if k is None or len(k) != 32:
            raise NoiseUsageError(message="a transport CipherState needs a 32-byte key")
        self.k = bytes(k)
        self.n = n

    def has_key(self):
        return True

    def encrypt_at(self, n, ad, plaintext):
        m = len(plaintext)
        if m > MESSAGE_SIZE_MAX:
            raise CryptoUsageError(message="plaintext exceeds %d bytes" % MESSAGE_SIZE_MAX)
        buf, olen = _scratch()
        _lib.crypto_aead_chacha20poly1305_ietf_encrypt(buf, olen, plaintext, m, ad, len(ad), _ffi.NULL,
                                                        _nonce(n), self.k)
        return _ffi.buffer(buf, olen[0])[:]

    def decrypt_at(self, n, ad, ciphertext):
        if type(ciphertext) is not bytes:
            # a memoryview of the datagram (noise/datagram.py hands the
            # sealed part over without a copy, for the boards' sake); cffi
            # takes bytes
            ciphertext = bytes(ciphertext)
        m = len(ciphertext)
        if m > _SCRATCH:
            raise CryptoUsageError(message="sealed message is not bytes or exceeds %d" % _SCRATCH)
        if m < AEAD_TAG_SIZE:
            raise DecryptFailed(message="message does not authenticate")
        buf, olen = _scratch()
        if _lib.crypto_aead_chacha20poly1305_ietf_decrypt(buf, olen, _ffi.NULL, ciphertext, m, ad, len(ad),
                                                           _nonce(n), self.k) != 0:
            raise DecryptFailed(message="message does not authenticate")
        return _ffi.buffer(buf, olen[0])[:]

    def _nonce_next(self):
        n = self.n
        if n > NONCE_MAX:
            raise NoiseUsageError(message="nonce space exhausted; start a new session")
        return n

    # encrypt_with_ad and decrypt_with_ad run for every transport message
    # (three or four per delivered message): _nonce_next, encrypt_at /
    # decrypt_at, _scratch and _nonce inline, one Python call each instead
    # of five; the same checks in the same order.

    def encrypt_with_ad(self, ad, plaintext):
        n = self.n
        if n > NONCE_MAX:
            raise NoiseUsageError(message="nonce space exhausted; start a new session")
        m = len(plaintext)
        if m > MESSAGE_SIZE_MAX:
            raise CryptoUsageError(message="plaintext exceeds %d bytes" % MESSAGE_SIZE_MAX)
        buf, olen = _local.__dict__.get("s") or _scratch()
        _lib.crypto_aead_chacha20poly1305_ietf_encrypt(buf, olen, plaintext, m, ad, len(ad), _ffi.NULL,
                                                        _ZERO4 + n.to_bytes(8, "little"), self.k)
        self.n = n + 1
        return _ffi.buffer(buf, olen[0])[:]

    def encrypt_many(self, ad, plaintexts):
        """encrypt_with_ad of each plaintext, in order: one call for the
        messages one write carries (a proxy seals a commit's acknowledgements
        or deliveries to a link together). The same nonces, bytes and errors
        as calling it for each."""
        n = self.n
        k = self.k
        nad = len(ad)
        buf, olen = _local.__dict__.get("s") or _scratch()
        enc = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
        buffer = _ffi.buffer
        out = []
        try:
            for m in plaintexts:
                if n > NONCE_MAX:
                    raise NoiseUsageError(message="nonce space exhausted; start a new session")
                ml = len(m)
                if ml > MESSAGE_SIZE_MAX:
                    raise CryptoUsageError(message="plaintext exceeds %d bytes" % MESSAGE_SIZE_MAX)
                enc(buf, olen, m, ml, ad, nad, _ffi.NULL, _ZERO4 + n.to_bytes(8, "little"), k)
                n += 1
                out.append(buffer(buf, olen[0])[:])
        finally:
            self.n = n   # (the messages sealed before an error used their nonces, as one by one)
        return out

    def decrypt_with_ad(self, ad, ciphertext):
        """§5.1: on an authentication failure the nonce is not incremented."""
        n = self.n
        if n > NONCE_MAX:
            raise NoiseUsageError(message="nonce space exhausted; start a new session")
        m = len(ciphertext)
        if m > _SCRATCH:
            raise CryptoUsageError(message="sealed message is not bytes or exceeds %d" % _SCRATCH)
        if m < AEAD_TAG_SIZE:
            raise DecryptFailed(message="message does not authenticate")
        buf, olen = _local.__dict__.get("s") or _scratch()
        if _lib.crypto_aead_chacha20poly1305_ietf_decrypt(buf, olen, _ffi.NULL, ciphertext, m, ad, len(ad),
                                                           _ZERO4 + n.to_bytes(8, "little"), self.k) != 0:
            raise DecryptFailed(message="message does not authenticate")
        self.n = n + 1
        return _ffi.buffer(buf, olen[0])[:]

    def rekey(self):
        """Noise §4.2 Rekey(), as CipherState.rekey."""
        self.k = self.encrypt_at(2 ** 64 - 1, b"", _ZERO32)[:32]


def available():
    return _lib is not None


def fast(cs):
    """A HostCipherState for a keyed CipherState (the same key and nonce), or
    ``cs`` itself when libsodium's binding is not there or cs has no key."""
    if _lib is None or not isinstance(cs, CipherState) or cs.k is None:
        return cs
    return HostCipherState(cs.k, cs.n)
