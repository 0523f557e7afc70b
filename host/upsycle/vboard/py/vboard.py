# VM-only helpers for board code running on the virtual board. Firmware
# imports this only from its small platform module, so the rest of the code
# sees plain socket/network/machine as on hardware.
import asyncio

import _vboard_js as _js

IS_VIRTUAL = True


async def wait_readable(sock, timeout_ms=None):
    """Wait until a datagram is queued on sock (a socket.socket).

    Returns True, or False if timeout_ms passed first.
    """
    if timeout_ms is None:
        await sock._wait()
        return True
    try:
        await asyncio.wait_for_ms(sock._wait(), timeout_ms)
        return True
    except asyncio.TimeoutError:
        return False


def board_name():
    return _js.boardName()
