"""Errors of the crypto layer, in the shared error family (shared_protocol.errors).

Remote errors say that bytes from outside did not authenticate; local errors
say that the caller passed something of the wrong size or the platform lacks
a random source. The messages never include key material.

Every kind, the two family bases included, is made on first use
(shared_protocol.errors.kind).
"""
from shared_protocol.errors import LocalError, RemoteError, kind


# Name, base, code (a line each; see kind()):
# - CryptoError: the family of remote errors.
# - CryptoUsageError: wrong argument size or type, or input over a named
#   limit.
# - AuthenticationFailed: an AEAD tag did not verify: wrong key, nonce, data
#   or associated data.
# - BadPublicKey: a public key does not decode, has small order, or gives an
#   all-zero shared secret (RFC 7748 §6.1).
# - NoRandomSource: the platform has no random source.
KINDS = """
CryptoError RemoteError crypto
CryptoUsageError LocalError crypto_usage
AuthenticationFailed CryptoError aead_auth_failed
BadSignature CryptoError bad_signature
BadPublicKey CryptoError bad_public_key
NoRandomSource LocalError no_random_source
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def __getattr__(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)
