"""The order a node imports its modules in at boot: one at a time, each
after every module it imports, with a collection after each.

Imported from .mpy files, a module loaded inside another's import leaves
the loader's temporary allocations between the modules' lasting objects: a
chain of nested imports needed a heap some 60 KB larger than the 160 KB the
modules keep. One at a time, the node boots in that smaller heap
(tools/bench/bench_rig.py). Frozen modules import the same way at no cost.

Two steps: what loading the topics needs (TOPICS, firmware/node.py start),
then, once the topics are loaded and the boot-only modules dropped, what
the links need (link_modules, firmware/runtime.py): a node that reboots on
full replicas never holds the links' modules together with the boot-only
ones and a stored replica's temporaries (docs/node.md, "Code a node never
runs, and the links' modules after the topics"). The Noise handshake's modules come when the link starts
(platform.HANDSHAKE_ONLY). This module is boot-only (runtime.BOOT_ONLY):
its lists' strings would stay in a board's heap.
tests/host/test_node_runtime.py checks the order and that it covers what a
node loads.
"""
import gc

TOPICS = (
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
# The proxy link's ...
LINK = (
    "shared_protocol.session", "shared_protocol.session.messages", "shared_protocol.session.client",
    "shared_protocol.noise", "shared_protocol.noise.events", "shared_protocol.noise.errors",
    "shared_protocol.noise.symmetric", "shared_protocol.noise.datagram", "shared_protocol.noise.udp",
    "shared_protocol.session.secure_client", "firmware.proxy_link",
)
# ... and with a lan section the LAN's (firmware/lan_link.py) ...
LAN = (
    "shared_protocol.overlay", "shared_protocol.wire.framing", "shared_protocol.dmc.sync",
    "shared_protocol.overlay.cyclon", "shared_protocol.rand", "shared_protocol.overlay.lan", "firmware.lan_link",
)
# ... and with BLE in the transport BLE's (firmware/ble_link.py), which runs
# the LAN's protocol layers (not its UDP link).
BLE = LAN[:-1] + (
    "shared_protocol.ble", "shared_protocol.ble.errors", "shared_protocol.ble.link", "shared_protocol.ble.adv",
    "firmware.ble_link",
)


def link_modules(cfg):
    """The modules of cfg's links, in import order."""
    mods = LINK
    if cfg.get("proxy_mode") == "all":
        mods += ("firmware.proxy_all",)   # after proxy_link, which it imports
    if cfg.get("lan") is not None:
        mods += LAN
    if "ble" in cfg.get("transport", "wifi"):
        mods += tuple(m for m in BLE if m not in mods)
    return mods


def load(mods):
    for m in mods:
        __import__(m)
        gc.collect()
