"""The node on MicroPython's unix port: what a unix MicroPython lacks.

The unix port is no board: it has no WiFi, watchdog or ADC, and its
sockets take getaddrinfo's raw addresses (firmware/platform.py handles
those). Built 32-bit with a fixed heap (``-X heapsize=``) it shows what a
board's heap holds, MemoryError included, and a single-precision build
shows a board's floats; tools/bench/bench_rig.py runs the node on it.

    micropython -X heapsize=150k -c "from firmware import unix; unix.main('node/config.json', 'node/data')"

with MICROPYPATH naming the folder that holds firmware/ and
shared_protocol/ (the .mpy files `upsycle flash` builds, or the sources).
The config is the one `upsycle flash` writes, for board "unix".
"""
import time

# The simulated sensor: about 22 C, rising 2 C over ten minutes, then back
# (a reading that changes, like the virtual board's).
_BASE_C = 21.0
_SWING_S = 600


def temperature_c():
    return _BASE_C + 2 * (time.time() % _SWING_S) / _SWING_S


def main(config_path, data_dir, app=None):
    """Boot like main.py does on a board, with the config and data folder
    given; app(node) defaults to the example app (firmware/app.py)."""
    from firmware import node
    cfg = node.start(path=config_path)
    del node   # boot only (runtime.BOOT_ONLY)
    if cfg is None:
        return
    from firmware import runtime
    if app is None:
        from firmware.app import temperature_app as app
    runtime.run(cfg, app, data_dir)
