"""The node's main loop: WiFi, watchdog, duty cycle, the datagrams.

    boot -> config (firmware.config) -> Node(cfg) (firmware/core.py) -> loop:
      WiFi (with backoff) -> proxy link (firmware/proxy_link.py), LAN
      link (firmware/lan_link.py, only with a ``lan`` section) and BLE
      radio (firmware/ble_link.py, only with transport ble); each turn:
      feed the watchdog, Node.turn (events, window, saves, acks), send,
      wait for a datagram or the next timer, read what arrived.

Durability is the node's (firmware/core.py): a reset at any point loses
nothing accepted.
"""
import asyncio

from shared_protocol import clock
from firmware import platform
from firmware.core import AUTHOR_BYTES, Node  # noqa: F401 (the runner's API)
from firmware.topic import DATA_DIR

try:
    from micropython import const
except ImportError:   # CPython, where the host tests run this module
    def const(x):
        return x

# Limits as `_NAME = const(...)`: on MicroPython a private constant is
# folded into the bytecode and takes no globals entry or qstr in RAM.

# Largest datagram read from a socket: framing.DATAGRAM_MAX, written out
# here so the node does not load framing.py (its stream decoder costs heap
# on a board) for one number; tests/host/test_node_runtime.py checks that
# the two agree.
RX_MAX = const(1200)
# Modules a node needs only while it boots: the config parser, the invite
# decoder, the reader of a topic's stored files and of a stored member's
# record, and the snapshot code that loads a stored replica (a LAN peer's
# snapshot imports the last two again).
# Imported from .mpy, a module's bytecode stays in the heap as long as
# sys.modules holds it; main() drops these once the Node's topics are
# loaded (_topics_loaded), and the GC frees them (tools/bench/bench_node.py --only modules).
BOOT_ONLY = ("firmware.node", "firmware.preload", "firmware.config", "firmware.topic_load",
             "shared_protocol.groups.invite", "shared_protocol.groups.record", "shared_protocol.dmc.snapshot",
             "shared_protocol.dmc.log_snapshot")
# Longest the loop sleeps without feeding the watchdog; the watchdog
# timeout is several times this (RP2040's WDT maximum is 8388 ms).
_LOOP_MAX_MS = const(500)
_WDT_TIMEOUT_MS = const(8000)
# WiFi retry backoff: fast first retries, then at most every 30 s.
_WIFI_RETRY_MIN_MS = const(500)
_WIFI_RETRY_MAX_MS = const(30000)
# Datagrams taken from the socket per loop turn: bounds the time between
# two watchdog feeds when a burst arrives (each may cost an Ed25519 verify,
# ~100 ms in the VM).
_RX_PER_TURN = const(8)
# With a LAN socket the loop looks at it at least this often (the VM can
# wait on one socket at a time).
_LAN_POLL_MS = const(100)
# With the BLE radio on, the loop turns at least this often: the irq
# handler only queues what arrived (firmware/ble_link.py), and a fragment
# waits for the next turn; 20 ms is about one connection interval.
_BLE_POLL_MS = const(20)
# Deep-sleep duty cycle (config "sleep": {"awake_s", "sleep_s"}, checked by
# firmware/config.py): a wake lasts at least awake_s and at most this much
# longer while readings still wait for the proxy's ack (a proxy out of
# reach must not drain the battery).
_AWAKE_GRACE_MS = const(10000)
# A status line on the REPL this often (what the field demo reads).
_STATUS_EVERY_MS = const(2000)


def _log(msg):
    print(msg)


async def _wifi(cfg, wdt, log):
    if cfg.get("transport", "wifi") == "ble":
        log("upsycle: transport ble: WiFi stays off")
        return None
    if not cfg.get("wifi"):
        log("upsycle: no WiFi network in the config: using the network as it is")
        return None
    delay = _WIFI_RETRY_MIN_MS
    while True:
        wlan = platform.wifi_connect(cfg.get("wifi", []))
        if wlan is None or wlan.isconnected():
            if wlan is not None:
                log("upsycle: WiFi joined")
            return wlan
        log("upsycle: WiFi not joined (status %s): retry in %d ms" % (wlan.status(), delay))
        waited = 0
        while waited < delay:
            wdt.feed()
            await asyncio.sleep_ms(min(_LOOP_MAX_MS, delay - waited))
            waited += _LOOP_MAX_MS
        delay = min(2 * delay, _WIFI_RETRY_MAX_MS)


def forget_boot_modules(names=BOOT_ONLY):
    """Drop modules used only at boot (platform.forget): the GC frees their
    bytecode; a later import loads them again."""
    platform.forget(names)


def _topics_loaded(cfg):
    """Node.__init__ once the topics are loaded: the boot-only modules out,
    then the links' in, one at a time (firmware/preload.py; its lists are
    boot-only too: dropped once used)."""
    forget_boot_modules()
    from firmware import preload
    preload.load(preload.link_modules(cfg))
    platform.forget(("firmware.preload",))


def duty_cycle(cfg):
    """(awake_ms, sleep_ms) from the config's "sleep" section, or None."""
    sc = cfg.get("sleep")
    if sc is None:
        return None
    return sc["awake_s"] * 1000, sc["sleep_s"] * 1000


def _ready_to_sleep(node, awake_ms, since_ms):
    """Awake long enough, and nothing left for the proxy (or out of grace)."""
    if since_ms < awake_ms:
        return False
    if since_ms >= awake_ms + _AWAKE_GRACE_MS:
        return True
    for t in node.topics:
        if t.waiting():
            return False
    return True


async def main(cfg, app=None, data_dir=DATA_DIR):
    """The node's life: never returns on a board (Ctrl-C cancels it)."""
    log = _log
    duty = duty_cycle(cfg)
    woke = platform.ticks_ms()
    if platform.woke_from_deepsleep():
        log("upsycle: woke from deep sleep")
    wdt = platform.watchdog(_WDT_TIMEOUT_MS)
    wlan = await _wifi(cfg, wdt, log)
    platform.collect_while_booting()
    node = Node(cfg, data_dir, topics_loaded=lambda: _topics_loaded(cfg))
    # Read only while the Node is made (its topics' invites, the key its
    # proxy link derives its static key from): some 0.9 KB of a board's
    # heap for two topics, given back (tools/bench/bench_rig.py).
    cfg.pop("topics", None)
    cfg.pop("node_key", None)
    platform.collect_often()
    platform.keep_room()
    if app is not None:
        app(node)
    node.open_ble()
    ble = node.ble
    proxy = node.proxy
    if not proxy.open():
        log("upsycle: no proxy configured: running offline")
    my_ip = "127.0.0.1"
    if wlan is not None:
        try:
            my_ip = wlan.ifconfig()[0]
        except (OSError, AttributeError):
            pass
    node.open_lan(my_ip)
    lan = node.lan
    last_status = platform.ticks_ms()
    last_line = None
    while True:
        wdt.feed()
        now = platform.ticks_ms()
        node.turn(now)
        if duty is not None and _ready_to_sleep(node, duty[0], clock.diff(now, woke)):
            for t in node.topics:
                t.save()   # everything is on flash already; this is a no-op unless a turn was cut
            log("upsycle: status " + node.status())
            log("upsycle: deep sleep for %d ms" % duty[1])
            platform.deepsleep(duty[1])   # a reset wakes the board: main.py again
            return
        if clock.diff(now, last_status) >= _STATUS_EVERY_MS:
            last_status = now
            st = node.status()
            # only changes: the REPL stays readable. The line's hash is
            # kept, not the line: a string kept for seconds among a turn's
            # garbage is one more small block pinned in the heap.
            h = hash(st)
            if h != last_line:
                last_line = h
                log("upsycle: status " + st)
            st = None
        sock = proxy.sock
        if sock is not None:
            for m in proxy.outgoing():
                try:
                    sock.send(m)
                except OSError:
                    pass  # no route yet: the session retransmits
        if lan is not None:
            lan.io(now, wdt)
        if ble is not None:
            ble.io(now, wdt)
            for m in ble.take_proxy():
                proxy.receive(m, now)
        d = proxy.next_deadline()
        wait = _LOOP_MAX_MS if d is None else max(1, min(_LOOP_MAX_MS, clock.diff(d, now)))
        if lan is not None and wait > _LAN_POLL_MS:
            wait = _LAN_POLL_MS
        if ble is not None and wait > _BLE_POLL_MS:
            wait = _BLE_POLL_MS
        if sock is None or proxy.over_ble:
            await asyncio.sleep_ms(wait)
            continue
        poller = proxy.poller
        if not await poller.wait(wait):
            continue
        read_proxy(proxy, poller, wdt)
        platform.keep_room()


def read_proxy(proxy, poller, wdt):
    """Up to _RX_PER_TURN datagrams from the proxy's socket, each handled
    as it is read; how many were read."""
    n = 0
    # Only a socket with a datagram queued is read: a read that finds
    # none raises EAGAIN, allocating the exception (and on some ports
    # the receive buffer) every turn (platform.Poller).
    while n < _RX_PER_TURN and poller.ready():
        # recv, not recvfrom: the socket is connected to the proxy, and
        # recvfrom allocates the sender's address besides the datagram.
        # (readinto() into one preallocated buffer would allocate
        # nothing, but on a socket it reads until the buffer is full:
        # it glues queued datagrams together. Stock firmware has no
        # recv_into.)
        try:
            data = poller.recv(RX_MAX)
        except OSError:
            break
        n += 1
        # the read took the room (platform.keep_room): taken again at
        # once, before the datagram is handled, whose garbage and kept
        # objects would otherwise fill the block the read left
        platform.keep_room()
        proxy.receive(data, platform.ticks_ms())
        data = None
        # Its deliveries opened now, not with the turn's: queued, every
        # delivery of a burst (up to _RX_PER_TURN datagrams) was held
        # while the first one's signature was checked, the tightest
        # moment of a board's heap (about 1 KB each, frozen on the
        # 32-bit unix port: tools/bench/bench_rig.py). Saves and acks
        # stay the turn's (Node.turn): an ack still follows the save.
        proxy.events(platform.ticks_ms())
        wdt.feed()
        if proxy.poller is not poller:
            break   # the link moved to another proxy: its socket is closed
    return n


def run(cfg, app=None, data_dir=DATA_DIR):
    """Start the node from main.py. On a board asyncio.run() blocks; on the
    virtual board it starts the task and returns (tools/vboard/README.md)."""
    asyncio.run(_guarded(cfg, app, data_dir))


async def _guarded(cfg, app, data_dir):
    try:
        await main(cfg, app, data_dir)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        # No reset: the same fault would come back at once (a boot loop).
        import sys
        print("upsycle: SAFE MODE: the node stopped on an error; the REPL stays available:")
        sys.print_exception(e)
        if isinstance(e, MemoryError):
            # full or in pieces? the two need different fixes (docs/node.md)
            import gc
            free = gc.mem_free()
            gc.collect()
            print("upsycle: heap: %d bytes free at the error, %d after a collection, %d in use" % (
                free, gc.mem_free(), gc.mem_alloc()))
