"""Errors of the crypto layer, in the shared error family (shared_protocol.errors).

Remote errors say that bytes from outside did not authenticate; local errors
say that the caller passed something of the wrong size or the platform lacks
a random source. The messages never include key material.

The kinds below the two families are made on first use
(shared_protocol.errors.kind).
"""
from shared_protocol.errors import LocalError, RemoteError, kind


class CryptoError(RemoteError):
    code = "crypto"


class CryptoUsageError(LocalError):
    """Wrong argument size or type, or input over a named limit."""
    code = "crypto_usage"


# Name, base, code (a line each; see kind()):
# - AuthenticationFailed: an AEAD tag did not verify: wrong key, nonce, data
#   or associated data.
# - BadPublicKey: a public key does not decode, has small order, or gives an
#   all-zero shared secret (RFC 7748 §6.1).
# - NoRandomSource: the platform has no random source.
KINDS = """
AuthenticationFailed CryptoError aead_auth_failed
BadSignature CryptoError bad_signature
BadPublicKey CryptoError bad_public_key
NoRandomSource LocalError no_random_source
"""


def __getattr__(name):
    return kind(name, KINDS, globals())
