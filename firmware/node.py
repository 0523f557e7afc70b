"""Start the node, or fall back to safe mode.

Safe mode is what a board does when it cannot run: it prints why on the REPL
and returns, so the REPL stays reachable for mpremote and no reset follows
(a reset would only fail the same way again: a boot loop).
"""
import sys

from firmware import VERSION, config

SAFE_MODE = "upsycle: SAFE MODE"


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
    from firmware import preload
    preload.load(preload.TOPICS)
    # This module and the parser are boot-only (runtime.BOOT_ONLY): dropped
    # here, before the Node is built, not after it. Loaded from .mpy their
    # bytecode (some 10 KB of heap) was held while the stored replicas were
    # read, a .mpy node's peak: after a reboot on full replicas the long
    # run failed at 214 KB in a log's room (tools/bench/bench_rig.py
    # --readings 150 --reboot 5, docs/node.md).
    from firmware import platform as fw_platform
    fw_platform.forget(("firmware.config", "firmware.node", "firmware.preload"))
    return cfg
