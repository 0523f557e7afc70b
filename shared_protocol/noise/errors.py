"""Errors of the Noise layer (shared_protocol.errors family)."""
from shared_protocol.errors import LocalError, RemoteError


class NoiseError(RemoteError):
    code = "noise"


class HandshakeFailed(NoiseError):
    """A handshake message is truncated, oversized, or does not authenticate."""
    code = "noise-handshake-failed"


class UnexpectedStaticKey(NoiseError):
    """The peer proved a static key, but not the one we were told to expect."""
    code = "noise-unexpected-static-key"


class DecryptFailed(NoiseError):
    """A transport message does not authenticate under the session key."""
    code = "noise-decrypt-failed"


class ReplayedMessage(NoiseError):
    """A datagram's nonce was already accepted or is older than the replay window."""
    code = "noise-replay"


class NoiseUsageError(LocalError):
    """The caller used the API out of turn or past a limit (a bug on our side)."""
    code = "noise-usage"
