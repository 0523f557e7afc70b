"""Errors of the crypto layer, in the shared error family (shared_protocol.errors).

Remote errors say that bytes from outside did not authenticate; local errors
say that the caller passed something of the wrong size or the platform lacks
a random source. The messages never include key material.
"""
from shared_protocol.errors import LocalError, RemoteError


class CryptoError(RemoteError):
    code = "crypto"


class AuthenticationFailed(CryptoError):
    """An AEAD tag did not verify: wrong key, nonce, data or associated data."""
    code = "aead_auth_failed"


class BadSignature(CryptoError):
    code = "bad_signature"


class BadPublicKey(CryptoError):
    """A public key does not decode, has small order, or gives an all-zero
    shared secret (RFC 7748 §6.1)."""
    code = "bad_public_key"


class CryptoUsageError(LocalError):
    """Wrong argument size or type, or input over a named limit."""
    code = "crypto_usage"


class NoRandomSource(LocalError):
    code = "no_random_source"
