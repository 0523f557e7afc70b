"""Errors of the BLE link (shared_protocol.errors family)."""
from shared_protocol.errors import LocalError, RemoteError


class BleRemoteError(RemoteError):
    """A fragment from the peer is malformed or breaks the link protocol;
    the fragment is dropped (``code`` says why)."""
    code = "ble_fragment"


class BleLocalError(LocalError):
    """The caller exceeded a limit (a message too long, a full queue) or
    used a failed link."""
    code = "ble_usage"
