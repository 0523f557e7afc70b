"""The node runtime: an asyncio main loop driving the sans-I/O pieces.

    boot -> config (firmware.config) -> Node(cfg) -> asyncio loop:
      WiFi (with backoff) -> UDP socket to the proxy -> ClientSession
      each loop turn: feed the watchdog, wait for a datagram or the next
      timer, hand datagrams to the session, handle its events, move outbox
      operations into the session's window (sealed with the group keys),
      send, and persist what changed before acknowledging anything.

Durability rule: a delivery is acknowledged to the proxy (``consumed``)
only after the op it carried is in the replica file on flash; a reading is
acknowledged to the app (publish returns) only after it is in the outbox
file on flash. A reset at any point loses nothing accepted.

The proxy link is the edge session inside a Noise XX link over UDP
(shared_protocol/secure_session.py; the node's static key is the X25519
form of its Ed25519 node key, so its session id is bound to its identity).
``"link": "plaintext"`` in the config selects the unencrypted session, for
a proxy run with --insecure. Either way the payloads are sealed end to end
with the group keys (docs/private-groups.md): a proxy stores ciphertext.
"""
import asyncio
import socket

from shared_protocol import session_wire as W
from shared_protocol.crypto import api as crypto
from shared_protocol.dmc import ops as O
from shared_protocol.errors import UpsycleError
from shared_protocol.groups.member import EpochChanged, Publication
from shared_protocol.secure_session import SecureLink, node_id_for
from shared_protocol.session import ClientSession

from firmware import platform
from firmware.topic import AUTHOR_GEN_BYTES, AUTHOR_NODE_BYTES, DATA_DIR, Topic, message_seq

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
# Modules a node needs only while it boots: the config parser and the
# invite decoder. Imported from .mpy, a module's bytecode stays in the heap
# as long as sys.modules holds it; main() drops these once the Node is
# built, and the GC frees them (tools/bench/bench_node.py --only modules).
BOOT_ONLY = ("firmware.node", "firmware.config", "shared_protocol.groups.invite")
# Publishes in flight to the proxy: each holds its sealed datagram (~350
# bytes) for retransmission, so 8 keep ~3 KB of the 48 KB budget.
_WINDOW = const(8)
# A board pings every 10 s: NAT mappings live 30 s or more, and a proxy
# notices a node gone within 30 s.
_KEEPALIVE_MS = const(10000)
# Longest the loop sleeps without feeding the watchdog; the watchdog
# timeout is several times this (RP2040's WDT maximum is 8388 ms).
_LOOP_MAX_MS = const(500)
# Bytes of a DMC author id: the node id's first AUTHOR_NODE_BYTES and a
# random generation per replica (topic.py, "Authors"). Every op carries its
# author, and its causal dependencies name other authors, so the id is on
# the air several times per reading: 8 bytes instead of a whole 32-byte key
# save about 24 bytes per mention. Authors are not secrets or proofs (a
# member's publication is proven by its group signature, groups/member.py);
# they only have to differ between the replicas of one topic, and two
# random 8-byte ids clash with probability 2**-64 per pair.
AUTHOR_BYTES = AUTHOR_NODE_BYTES + AUTHOR_GEN_BYTES
_WDT_TIMEOUT_MS = const(8000)
# WiFi retry backoff: fast first retries, then at most every 30 s.
_WIFI_RETRY_MIN_MS = const(500)
_WIFI_RETRY_MAX_MS = const(30000)
# Datagrams taken from the socket per loop turn: bounds the time between
# two watchdog feeds when a burst arrives (each may cost an Ed25519 verify,
# ~100 ms in the VM).
_RX_PER_TURN = const(8)
# Errors from a misbehaving proxy logged before going quiet (it may send
# garbage at line rate; the REPL must stay readable).
ERRORS_LOGGED_MAX = const(20)
# LAN timers: announcements to peers (or broadcast), CYCLON shuffles, and
# an anti-entropy round with one random peer. A few seconds each: a reading
# reaches the LAN neighbours within seconds even without a proxy, and the
# traffic stays a few datagrams per period.
_ANNOUNCE_MS = const(5000)
_SHUFFLE_MS = const(5000)
_SYNC_MS = const(3000)
# With a LAN socket the loop looks at it at least this often (the VM can
# wait on one socket at a time).
_LAN_POLL_MS = const(100)
_LAN_PEERS_MAX = const(8)
# The broadcast address announcements go to when no peers are configured.
BROADCAST = "255.255.255.255"
# Deep-sleep duty cycle (config "sleep": {"awake_s", "sleep_s"}): a wake
# lasts at least awake_s and at most this much longer while readings still
# wait for the proxy's ack (a proxy out of reach must not drain the battery).
_AWAKE_GRACE_MS = const(10000)
_SLEEP_MAX_S = const(86400)
# A status line on the REPL this often (what the field demo reads).
_STATUS_EVERY_MS = const(2000)
# A refill (a topic whose replica was set aside, started over at the proxy)
# is over once the proxy has confirmed it and then sent nothing for the topic
# this long while the link was up: the proxy sends its backlog back to back
# (a window of 8 every second or so even in the VM, where each delivery costs
# an Ed25519 verify), so 20 s of silence means it has nothing more.
REFILL_IDLE_MS = const(20000)


def _log(msg):
    print(msg)


class PlainLink:
    """The unencrypted session, with SecureLink's interface (proxies run
    with --insecure; tests)."""

    def __init__(self, session):
        self.session = session
        self.dropped = 0

    def start(self, now, ephemeral_private):
        self.session.start(now, False)

    def receive(self, data, now):
        self.session.receive(data, now)

    def poll(self, now):
        self.session.poll(now)

    def next_deadline(self):
        return self.session.next_deadline()

    def events(self):
        return self.session.events()

    def data_to_send(self):
        return self.session.data_to_send()


class Node:
    def __init__(self, cfg, data_dir=DATA_DIR, log=_log, files=None):
        self.cfg = cfg
        self.log = log
        self.node_id = bytes.fromhex(cfg["node_id"])
        # Each topic's DMC author: this prefix + a generation per replica (topic.py).
        self.node_author = self.node_id[:AUTHOR_NODE_BYTES]
        crypto.set_random_source(platform.random_bytes)
        platform.makedirs(data_dir)
        self.topics = []
        for inv in cfg.get("topics", []):
            try:
                self.topics.append(Topic(inv, self.node_author, data_dir, files, log))
            except UpsycleError as e:
                log("upsycle: a topic invite is unusable (%s: %s): skipped; re-flash with a fresh invite"
                    % (e.code, e.message))
        self.by_id = {}
        for t in self.topics:
            self.by_id[t.topic] = t
        if cfg.get("link") == "plaintext":
            self.session = ClientSession(self.node_id[:16], window=_WINDOW, keepalive_ms=_KEEPALIVE_MS)
            self.link = PlainLink(self.session)
        else:
            from shared_protocol.groups.keys import Identity
            static = Identity(bytes.fromhex(cfg["node_key"])).x25519_secret
            sid = node_id_for(crypto.x25519_public(static))
            self.session = ClientSession(sid, window=_WINDOW, keepalive_ms=_KEEPALIVE_MS)
            self.link = SecureLink(self.session, static, True, None, platform.ticks_diff)
        self._dropped_seen = 0
        self.proxies = []
        from firmware import config
        for p in cfg.get("proxies", []):
            addr, key = config.split_proxy_key(p)
            host, _, port = addr.rpartition(":")
            self.proxies.append((host, int(port), key))
        self.proxy_index = 0
        if not self.proxies:
            for t in self.topics:
                if t.refilling:
                    log("upsycle: topic %s: no proxy in the config to refill the replica from: "
                        "LAN peers only" % t.name)
                    t.end_refill()
        self.inflight = {}       # msg_id -> (topic, dmc author, dmc seq)
        self.sent_upto = {}      # topic id -> {dmc author: highest seq handed to the session this link}
        self.pending_consumed = []
        self.counts = {"acked": 0, "delivered": 0, "rejected": 0, "errors": 0}
        self.online = False
        self.refill_quiet = {}   # topic id -> ticks of the refill's last sign of life
        self.sock = None
        self.addr = None
        self.lan = None
        self.lan_sock = None
        self.lan_peers = []
        self._lan_due = [0, 0, 0]   # announce, shuffle, sync

    # -- the LAN (shared_protocol/lan.py) --

    def open_lan(self, my_ip):
        lc = self.cfg.get("lan")
        if not isinstance(lc, dict):
            return False
        port = lc.get("port")
        peers = lc.get("peers", [])
        if not isinstance(port, int) or not 0 < port < 65536 or not isinstance(peers, list) \
                or len(peers) > _LAN_PEERS_MAX:
            self.log("upsycle: config 'lan' must be {\"port\": 1..65535, \"peers\": [\"host:port\", ...] "
                     "(at most %d)}: LAN off" % _LAN_PEERS_MAX)
            return False
        from shared_protocol.lan import Lan, LanTopic, parse_addr
        from shared_protocol.rand import Rng
        try:
            for p in peers:
                h, pt = parse_addr(p)
                self.lan_peers.append(platform.sockaddr(h, pt))
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind(platform.sockaddr("0.0.0.0", port))
        except (OSError, ValueError) as e:
            self.log("upsycle: LAN socket on port %d failed (%s): LAN off" % (port, e))
            return False
        if not peers and not platform.IS_VIRTUAL:
            self.lan_peers.append(platform.sockaddr(BROADCAST, port))
        seed = 0
        for b in platform.random_bytes(8):
            seed = (seed << 8) | b
        lts = []
        for t in self.topics:
            lts.append(LanTopic(t.member, t.replica, t.mark_synced))
        self.lan = Lan(self.node_id, my_ip, port, Rng(seed), platform.random_bytes, lts)
        self.lan_sock = s
        self.log("upsycle: LAN on port %d, %d peer address(es)%s" % (
            port, len(peers), "" if peers or platform.IS_VIRTUAL else " + broadcast"))
        return True

    def lan_timers(self, now):
        """[(sockaddr, datagram)] due now on the LAN."""
        lan = self.lan
        out = []
        due = self._lan_due
        if platform.ticks_diff(now, due[0]) >= 0:
            due[0] = now + _ANNOUNCE_MS
            a = lan.announce()
            for p in self.lan_peers:
                out.append((p, a))
        if platform.ticks_diff(now, due[1]) >= 0:
            due[1] = now + _SHUFFLE_MS
            out += self._resolve(lan.shuffle(now))
        if platform.ticks_diff(now, due[2]) >= 0:
            due[2] = now + _SYNC_MS
            out += self._resolve(lan.sync_round(now))
        return out

    def lan_receive(self, data, src, now):
        return self._resolve(self.lan.receive(data, src[0], src[1], now))

    def _resolve(self, msgs):
        from shared_protocol.lan import parse_addr
        out = []
        for addr, data in msgs:
            try:
                h, p = parse_addr(addr)
                out.append((platform.sockaddr(h, p), data))
            except ValueError:
                pass
        return out

    # -- the app API --

    def topic(self, name):
        for t in self.topics:
            # a name (str) or an id (bytes); str == bytes warns on MicroPython
            if (t.name if isinstance(name, str) else t.topic) == name:
                return t
        raise KeyError("no topic %r in this node's config" % (name,))

    def publish(self, topic, key, value, t=None):
        """Append a reading to ``key`` in the topic's replica and queue it for
        the proxy; durable on flash when this returns."""
        tp = self.topic(topic)
        tp.append(key, platform.unix_time() if t is None else t, value)
        tp.save()

    def on_change(self, topic, callback):
        """callback(key, value, author) for every op applied, local or remote."""
        self.topic(topic).callbacks.append(callback)

    # -- link --

    def open_link(self):
        if not self.proxies:
            return False
        host, port, key = self.proxies[self.proxy_index % len(self.proxies)]
        try:
            self.addr = platform.sockaddr(host, port)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind(platform.sockaddr("0.0.0.0", 0))
        except OSError as e:
            self.log("upsycle: cannot open a socket to %s:%d: %s" % (host, port, e))
            return False
        self.sock = s
        now = platform.ticks_ms()
        for t in self.topics:
            self.session.subscribe(t.topic, now)
            if t.refilling:
                # The proxy forgets our cursor and starts the topic over at
                # the oldest message it keeps (shared_protocol/session.py).
                self.session.resubscribe(t.topic, now)
                self.log("upsycle: topic %s: asking the proxy for the topic's history again" % t.name)
        if not isinstance(self.link, PlainLink):
            # pinned: the handshake fails against any other key; else first use
            self.link.proxy_key = key
        self.link.start(now, platform.random_bytes(32))
        self.log("upsycle: proxy link to %s:%d (udp, %s)" % (
            host, port, "plaintext" if isinstance(self.link, PlainLink) else
            ("Noise XX, pinned key" if key else "Noise XX")))
        return True

    def next_proxy(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.proxy_index += 1
        self.sent_upto = {}
        self.inflight = {}

    # -- one turn of the loop (no I/O wait inside) --

    def receive(self, data, now):
        self.link.receive(data, now)
        d = self.link.dropped
        if d != self._dropped_seen:
            self._dropped_seen = d
            self.counts["errors"] += 1
            if self.counts["errors"] <= ERRORS_LOGGED_MAX:
                self.log("upsycle: a datagram from the proxy failed the secure link's checks: dropped (%d so far)" % d)

    def turn(self, now):
        s = self.session
        if self.sock is not None:   # no link (offline, no proxy): nothing to poll
            self.link.poll(now)
            self._events(now)
            self._fill_window(now)
        if self.refill_quiet:
            self._refill_done(now)
        saved = 0
        for t in self.topics:
            saved += t.save()
        # Acknowledge deliveries only now that their ops are on flash.
        pc = self.pending_consumed
        if pc:
            for topic, seq in pc:
                s.consumed(topic, seq)
            del pc[:]
        return saved

    def _refill_done(self, now):
        rq = self.refill_quiet
        for topic in list(rq):
            if not self.online:
                rq[topic] = now    # no word from the proxy while the link is down
                continue
            if platform.ticks_diff(now, rq[topic]) < REFILL_IDLE_MS:
                continue
            del rq[topic]
            tp = self.by_id[topic]
            tp.end_refill()
            self.log("upsycle: topic %s: refill from the proxy done, %d readings in the replica" % (
                tp.name, _count_readings(tp.replica)))

    def outgoing(self):
        return self.link.data_to_send()

    def next_deadline(self):
        return self.link.next_deadline()

    def _events(self, now):
        for ev in self.link.events():
            kind = ev[0]
            if kind == "delivery":
                self._deliver(ev[1], ev[2], ev[4])
                if ev[1] in self.refill_quiet:
                    self.refill_quiet[ev[1]] = now
            elif kind == "subscribed":
                tp = self.by_id.get(ev[1])
                if tp is not None and tp.refilling:
                    if tp.topic not in self.refill_quiet:   # not a resume on a new link
                        self.log("upsycle: topic %s: the proxy starts it over after its message %d: refilling"
                                 % (tp.name, ev[2]))
                    self.refill_quiet[tp.topic] = now
            elif kind == "missed":
                self.pending_consumed.append((ev[1], ev[2]))
            elif kind == "acked" or kind == "rejected":
                x = self.inflight.pop(ev[1], None)
                if x is not None:
                    tp = self.by_id[x[0]]
                    tp.acked(x[1], x[2])
                    if kind == "acked":
                        self.counts["acked"] += 1
                        if self.counts["acked"] == 1:
                            self.log("upsycle: first reading acknowledged by the proxy")
                    else:
                        self.counts["rejected"] += 1
                        self.log("upsycle: proxy refused a reading (%s: %s): dropped" % (ev[2], ev[3]))
            elif kind == "welcome":
                if not self.online:
                    self.log("upsycle: proxy session open")
                self.online = True
            elif kind == "lost" or kind == "link_failed":
                self.online = False
                self.log("upsycle: proxy link lost (%s): retrying" % (ev[1],))
                # The session keeps what is in flight and resends it on
                # the new link (session.py).
                self.link.start(now, platform.random_bytes(32))
            elif kind == "secured":
                self.log("upsycle: secure link up, proxy key %s" % bytes(ev[1][:8]).hex())
            elif kind == "error":
                self.counts["errors"] += 1
                if self.counts["errors"] <= ERRORS_LOGGED_MAX:
                    self.log("upsycle: bad message from the proxy ignored (%s: %s)" % (ev[1], ev[2]))

    def _deliver(self, topic, seq, payload):
        tp = self.by_id.get(topic)
        self.pending_consumed.append((topic, seq))
        if tp is None:
            return
        try:
            ev = tp.member.open(payload, platform.unix_time())
        except (UpsycleError, ValueError, TypeError) as e:
            self.counts["rejected"] += 1
            self.log("upsycle: topic %s: delivery %d rejected (%s)" % (tp.name, seq, getattr(e, "code", e)))
            return
        tp.dirty_state = True   # replay window moved
        if isinstance(ev, Publication):
            try:
                tp.apply(ev.body)
                self.counts["delivered"] += 1
            except UpsycleError as e:
                self.log("upsycle: topic %s: op not applied (%s: %s)" % (tp.name, e.code, e.message))
        elif isinstance(ev, EpochChanged):
            self.log("upsycle: topic %s: re-keyed to epoch %d" % (tp.name, ev.epoch))

    def _fill_window(self, now):
        s = self.session
        sealed = False
        for tp in self.topics:
            upto = self.sent_upto.get(tp.topic)
            if upto is None:
                upto = self.sent_upto[tp.topic] = {}
            for op in tp.outbox:
                if not s.can_publish():
                    break
                a, seq = O.author_seq(op)
                if seq <= upto.get(a, 0):
                    continue
                # The session's node id: on a Noise link the proxy binds it to
                # the link's key and refuses ids that do not start with it.
                mid = W.message_id(s.node_id, message_seq(a, seq))
                payload = tp.member.seal(op, platform.random_bytes(32), platform.unix_time())
                s.publish(tp.topic, mid, payload, now)
                self.inflight[mid] = (tp.topic, a, seq)
                upto[a] = seq
                tp.dirty_state = True   # the group sequence number moved
                sealed = True
        return sealed

    def status(self):
        out = held = 0
        for t in self.topics:
            out += len(t.outbox)
            held += _count_readings(t.replica)
        s = "published %d acked %d delivered %d outbox %d readings %d" % (
            sum(t.published for t in self.topics), self.counts["acked"], self.counts["delivered"], out, held)
        if self.lan is not None:
            s += " lan peers %d synced %d" % (len(self.lan.cyclon), self.lan.synced_ops)
        return s


def _count_readings(replica):
    n = 0
    for key in replica.objects:
        if key[0] == O.T_LOG:
            n += len(replica.objects[key])
    return n


async def _wifi(cfg, wdt, log):
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
    """Drop modules used only at boot from sys.modules and from their
    package, so nothing refers to them and the GC frees their bytecode. A
    later import loads them again. Boards only: a CPython host has the RAM,
    and its tests hold these modules' classes."""
    import sys
    if sys.implementation.name != "micropython":
        return
    for name in names:
        if sys.modules.pop(name, None) is None:
            continue
        pkg, _, leaf = name.rpartition(".")
        try:
            delattr(sys.modules[pkg], leaf)
        except (KeyError, AttributeError):
            pass


def duty_cycle(cfg, log=_log):
    """(awake_ms, sleep_ms) from the config's "sleep" section, or None."""
    sc = cfg.get("sleep")
    if sc is None:
        return None
    a = sc.get("awake_s") if isinstance(sc, dict) else None
    z = sc.get("sleep_s") if isinstance(sc, dict) else None
    if not isinstance(a, int) or not isinstance(z, int) or not 1 <= a <= _SLEEP_MAX_S or not 1 <= z <= _SLEEP_MAX_S:
        log("upsycle: config 'sleep' must be {\"awake_s\": 1..%d, \"sleep_s\": 1..%d}: staying awake"
            % (_SLEEP_MAX_S, _SLEEP_MAX_S))
        return None
    return a * 1000, z * 1000


def _ready_to_sleep(node, awake_ms, since_ms):
    """Awake long enough, and nothing left for the proxy (or out of grace)."""
    if since_ms < awake_ms:
        return False
    if since_ms >= awake_ms + _AWAKE_GRACE_MS:
        return True
    for t in node.topics:
        if t.outbox:
            return False
    return True


async def main(cfg, app=None, data_dir=DATA_DIR):
    """The node's life: never returns on a board (Ctrl-C cancels it)."""
    log = _log
    duty = duty_cycle(cfg, log)
    woke = platform.ticks_ms()
    if platform.woke_from_deepsleep():
        log("upsycle: woke from deep sleep")
    wdt = platform.watchdog(_WDT_TIMEOUT_MS)
    wlan = await _wifi(cfg, wdt, log)
    node = Node(cfg, data_dir)
    forget_boot_modules()
    if app is not None:
        app(node)
    if not node.open_link():
        log("upsycle: no proxy configured: running offline")
    my_ip = "127.0.0.1"
    if wlan is not None:
        try:
            my_ip = wlan.ifconfig()[0]
        except (OSError, AttributeError):
            pass
    node.open_lan(my_ip)
    last_status = platform.ticks_ms()
    last_line = None
    while True:
        wdt.feed()
        now = platform.ticks_ms()
        node.turn(now)
        if duty is not None and _ready_to_sleep(node, duty[0], platform.ticks_diff(now, woke)):
            for t in node.topics:
                t.save()   # everything is on flash already; this is a no-op unless a turn was cut
            log("upsycle: status " + node.status())
            log("upsycle: deep sleep for %d ms" % duty[1])
            platform.deepsleep(duty[1])   # a reset wakes the board: main.py again
            return
        if platform.ticks_diff(now, last_status) >= _STATUS_EVERY_MS:
            last_status = now
            st = node.status()
            if st != last_line:   # only changes: the REPL stays readable
                last_line = st
                log("upsycle: status " + st)
        sock = node.sock
        if sock is not None:
            for m in node.outgoing():
                try:
                    sock.sendto(m, node.addr)
                except OSError:
                    pass  # no route yet: the session retransmits
        ls = node.lan_sock
        if ls is not None:
            _lan_io(node, ls, now, wdt)
        d = node.next_deadline()
        wait = _LOOP_MAX_MS if d is None else max(1, min(_LOOP_MAX_MS, platform.ticks_diff(d, now)))
        if ls is not None and wait > _LAN_POLL_MS:
            wait = _LAN_POLL_MS
        if sock is None:
            await asyncio.sleep_ms(wait)
            continue
        if not await platform.wait_readable(sock, wait):
            continue
        for _ in range(_RX_PER_TURN):
            try:
                data = sock.recvfrom(RX_MAX)[0]
            except OSError:
                break   # EAGAIN: nothing more queued
            node.receive(data, platform.ticks_ms())
            wdt.feed()


def _lan_io(node, ls, now, wdt):
    out = node.lan_timers(now)
    for _ in range(_RX_PER_TURN):
        try:
            data, src = ls.recvfrom(RX_MAX + 64)
        except OSError:
            break
        out += node.lan_receive(data, _host_port(src), platform.ticks_ms())
        wdt.feed()
    for addr, data in out:
        try:
            ls.sendto(data, addr)
        except OSError:
            pass


def _host_port(src):
    # recvfrom gives (host, port) on the virtual board and CPython, a raw
    # sockaddr on some ports: normalise to (dotted host, port).
    if isinstance(src, tuple):
        return src[0], src[1]
    import socket as _s
    try:
        return _s.inet_ntop(_s.AF_INET, src[4:8]), (src[2] << 8) | src[3]
    except (AttributeError, IndexError, TypeError):
        return "0.0.0.0", 0


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
