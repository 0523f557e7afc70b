"""Errors of the Noise layer (shared_protocol.errors family)."""
from shared_protocol.errors import LocalError, RemoteError


class NoiseError(RemoteError):
    code = "noise"


class HandshakeFailed(NoiseError):
    """A handshake message is truncated, oversized, or does not authenticate."""
    code = "noise_handshake_failed"


class UnexpectedStaticKey(NoiseError):
    """The peer proved a static key, but not the one we were told to expect."""
    code = "noise_unexpected_static_key"


class DecryptFailed(NoiseError):
    """A transport message does not authenticate under the session key."""
    code = "noise_decrypt_failed"


class ReplayedMessage(NoiseError):
    """A datagram's nonce was already accepted or is older than the replay window."""
    code = "noise_replay"


class NoiseUsageError(LocalError):
    """The caller used the API out of turn or past a limit (a bug on our side)."""
    code = "noise_usage"
