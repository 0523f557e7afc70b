"""Start the node, or fall back to safe mode.

Safe mode is what a board does when it cannot run: it prints why on the REPL
and returns, so the REPL stays reachable for mpremote and no reset follows
(a reset would only fail the same way again: a boot loop).
"""
import sys

from firmware import VERSION, config

SAFE_MODE = "upsycle: SAFE MODE"

# The modules a node needs to load its topics, each after every module it
# imports, so each import below loads that one module
# (tests/host/test_node_runtime.py checks the order and that it covers
# what a node loads). Imported from .mpy files, a module loaded inside
# another's import leaves the loader's temporary allocations between the
# modules' lasting objects: a chain of nested imports needed a heap some
# 60 KB larger than the 160 KB the modules keep. One at a time with a
# collection after each, the node boots in that smaller heap
# (tools/bench/bench_rig.py). Frozen modules import the same way at no
# cost. The proxy link's, the LAN's and BLE's modules come after the
# topics are loaded (firmware/runtime.py PRELOAD_LINK), and the Noise
# handshake's when the link starts (platform.HANDSHAKE_ONLY).
PRELOAD = (
    "firmware", "firmware.platform", "shared_protocol", "shared_protocol.dmc", "shared_protocol.errors",
    "shared_protocol.dmc.errors", "shared_protocol.wire", "shared_protocol.wire.cbor",
    "shared_protocol.dmc.ops", "shared_protocol.dmc.crdts", "shared_protocol.dmc.crdt_log",
    "shared_protocol.dmc.replica", "shared_protocol.dmc.store", "shared_protocol.groups",
    "shared_protocol.crypto", "shared_protocol.crypto.ct", "shared_protocol.crypto.errors",
    "shared_protocol.crypto.hkdf", "shared_protocol.crypto.chacha20poly1305", "shared_protocol.crypto.field",
    "shared_protocol.crypto.sha512", "shared_protocol.crypto.ed25519", "shared_protocol.crypto.x25519",
    "shared_protocol.crypto.pure", "shared_protocol.crypto.api", "shared_protocol.groups.errors",
    "shared_protocol.groups.keys", "shared_protocol.wire.envelope", "shared_protocol.groups.wire",
    "shared_protocol.groups.readings", "shared_protocol.replay", "shared_protocol.groups.member",
    "firmware.topic", "shared_protocol.clock", "firmware.core", "firmware.runtime",
)


def preload():
    """Import what the node needs to load its topics, one module at a time
    (see PRELOAD)."""
    import gc
    for m in PRELOAD:
        __import__(m)
        gc.collect()


def safe_mode(reason):
    print("%s: %s" % (SAFE_MODE, reason))
    print("upsycle: the REPL stays available; fix it with `upsycle flash` or mpremote, then reset")


def start(platform=None, path=config.CONFIG_PATH):
    """Run from /main.py. Returns the config dict, or None in safe mode."""
    platform = platform or sys.platform
    try:
        cfg = config.load(platform, path)
    except config.ConfigError as e:
        safe_mode("%s (%s)" % (e.message, e.code))
        return None
    print("upsycle: node up: id %s board %s firmware %s" % (cfg["node_id"][:16], cfg["board"], VERSION))
    preload()
    # This module and the parser are boot-only (runtime.BOOT_ONLY): dropped
    # here, before the Node is built, not after it. Loaded from .mpy their
    # bytecode (some 10 KB of heap) was held while the stored replicas were
    # read, a .mpy node's peak: after a reboot on full replicas the long
    # run failed at 214 KB in a log's room (tools/bench/bench_rig.py
    # --readings 150 --reboot 5, docs/node.md).
    from firmware import platform as fw_platform
    fw_platform.forget(("firmware.config", "firmware.node"))
    return cfg
