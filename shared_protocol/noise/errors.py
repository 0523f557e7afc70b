"""Errors of the Noise layer (shared_protocol.errors family).

Every kind, the two family bases included, is made on first use
(shared_protocol.errors.kind)."""
from shared_protocol.errors import LocalError, RemoteError, kind


# Name, base, code (a line each; see kind()):
# - NoiseError: the family of remote errors.
# - NoiseUsageError: the caller used the API out of turn or past a limit (a
#   bug on our side).
# - HandshakeFailed: a handshake message is truncated, oversized, or does
#   not authenticate.
# - UnexpectedStaticKey: the peer proved a static key, but not the one we
#   were told to expect.
# - DecryptFailed: a transport message does not authenticate under the
#   session key.
# - ReplayedMessage: a datagram's nonce was already accepted or is older
#   than the replay window.
# - HandshakeTimedOut: a handshake message went unanswered TRIES_MAX times
#   (noise/udp.py).
# - BadPacket: a datagram that is no packet of the UDP transport (noise/udp.py).
# - SessionUnknown: the responder has no session for our transport packets:
#   start anew (noise/udp.py).
KINDS = """
NoiseError RemoteError noise
NoiseUsageError LocalError noise_usage
HandshakeFailed NoiseError noise_handshake_failed
UnexpectedStaticKey NoiseError noise_unexpected_static_key
DecryptFailed NoiseError noise_decrypt_failed
ReplayedMessage NoiseError noise_replay
HandshakeTimedOut NoiseError noise_handshake_timeout
BadPacket NoiseError noise_bad_packet
SessionUnknown NoiseError noise_session_unknown
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def __getattr__(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)
