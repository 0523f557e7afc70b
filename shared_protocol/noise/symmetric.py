"""CipherState of the Noise Protocol Framework (revision 34, §5.1) for the
suite 25519 / ChaChaPoly / SHA256: what a session's transport keeps once
its handshake is over. SymmetricState (§5.2), the handshake's, lives in
handshake.py, so a board drops it with the handshake (firmware/platform.py,
HANDSHAKE_ONLY).

A small value holder; the handshake copies it to make a read transactional
(a rejected message leaves the handshake untouched).
"""
from shared_protocol.crypto import api
from shared_protocol.crypto import errors as cerr
from shared_protocol.noise import errors as nerr

HASHLEN = 32
DHLEN = 32
TAGLEN = 16
# Noise §3: every Noise message is at most 65535 bytes.
MESSAGE_MAX = 65535
# Noise §5.1: nonce 2^64 - 1 is reserved; a session must end (or rekey) before.
NONCE_MAX = 2 ** 64 - 2
_ZERO32 = b"\x00" * 32


def nonce_bytes(n):
    # §12.3 (ChaChaPoly): 32 bits of zeros, then the 64-bit nonce little-endian.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class CipherState:
    def __init__(self, k=None, n=0):
        self.k = k
        self.n = n

    def copy(self):
        return CipherState(self.k, self.n)

    def has_key(self):
        return self.k is not None

    def encrypt_with_ad(self, ad, plaintext):
        if self.k is None:
            return bytes(plaintext)
        if self.n > NONCE_MAX:
            raise nerr.NoiseUsageError(message=__debug__ and "nonce space exhausted; start a new session")
        out = api.aead_encrypt(self.k, nonce_bytes(self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad, ciphertext):
        """§5.1: on an authentication failure the nonce is not incremented."""
        if self.k is None:
            return bytes(ciphertext)
        if self.n > NONCE_MAX:
            raise nerr.NoiseUsageError(message=__debug__ and "nonce space exhausted; start a new session")
        out = self.decrypt_at(self.n, ad, ciphertext)
        self.n += 1
        return out

    def decrypt_at(self, n, ad, ciphertext):
        """Decrypt with an explicit nonce (datagram mode); no state change."""
        try:
            return api.aead_decrypt(self.k, nonce_bytes(n), ciphertext, ad)
        except cerr.AuthenticationFailed:
            raise nerr.DecryptFailed(message=__debug__ and "message does not authenticate")

    def encrypt_at(self, n, ad, plaintext):
        return api.aead_encrypt(self.k, nonce_bytes(n), plaintext, ad)

    def rekey(self):
        """Noise §4.2 / §11.3 Rekey(): k = first 32 bytes of
        ENCRYPT(k, 2^64 - 1, zerolen, zeros). Both ends call it at the same
        point (e.g. every N messages) so an old key cannot decrypt later
        traffic even if the current one leaks; the nonce keeps counting."""
        if self.k is None:
            raise nerr.NoiseUsageError(message=__debug__ and "no key to rekey")
        self.k = api.aead_encrypt(self.k, nonce_bytes(2 ** 64 - 1), _ZERO32, b"")[:32]
