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

The proxy link is the plaintext session over UDP (docs/proxy.md); the
payloads are sealed end to end with the group keys (docs/private-groups.md),
so a proxy stores ciphertext only.
"""
import asyncio
import socket

from shared_protocol import session_wire as W
from shared_protocol.crypto import api as crypto
from shared_protocol.dmc import ops as O
from shared_protocol.errors import UpsycleError
from shared_protocol.framing import DATAGRAM_MAX
from shared_protocol.groups.member import EpochChanged, Publication
from shared_protocol.session import ClientSession

from firmware import platform
from firmware.topic import Topic, DATA_DIR

# Publishes in flight to the proxy: each holds its sealed datagram (~330
# bytes) for retransmission, so 8 keep ~3 KB of the 48 KB budget.
WINDOW = 8
# A board pings every 10 s: NAT mappings live 30 s or more, and a proxy
# notices a node gone within 30 s.
KEEPALIVE_MS = 10000
# Longest the loop sleeps without feeding the watchdog; the watchdog
# timeout is several times this (RP2040's WDT maximum is 8388 ms).
LOOP_MAX_MS = 500
WDT_TIMEOUT_MS = 8000
# WiFi retry backoff: fast first retries, then at most every 30 s.
WIFI_RETRY_MIN_MS = 500
WIFI_RETRY_MAX_MS = 30000
# Datagrams taken from the socket per loop turn: bounds the time between
# two watchdog feeds when a burst arrives (each may cost an Ed25519 verify,
# ~100 ms in the VM).
RX_PER_TURN = 8
# Errors from a misbehaving proxy logged before going quiet (it may send
# garbage at line rate; the REPL must stay readable).
ERRORS_LOGGED_MAX = 20
# A status line on the REPL this often (what the field demo reads).
STATUS_EVERY_MS = 2000


def _log(msg):
    print(msg)


class Node:
    def __init__(self, cfg, data_dir=DATA_DIR, log=_log, files=None):
        self.cfg = cfg
        self.log = log
        self.node_id = bytes.fromhex(cfg["node_id"])
        self.author = self.node_id[:O.AUTHOR_MAX]
        crypto.set_random_source(platform.random_bytes)
        platform.makedirs(data_dir)
        self.topics = []
        for inv in cfg.get("topics", []):
            try:
                self.topics.append(Topic(inv, self.author, data_dir, files, log))
            except UpsycleError as e:
                log("upsycle: a topic invite is unusable (%s: %s): skipped; re-flash with a fresh invite"
                    % (e.code, e.message))
        self.by_id = {}
        for t in self.topics:
            self.by_id[t.topic] = t
        self.session = ClientSession(self.node_id, window=WINDOW, keepalive_ms=KEEPALIVE_MS)
        self.proxies = []
        for p in cfg.get("proxies", []):
            host, _, port = p.rpartition(":")
            self.proxies.append((host, int(port)))
        self.proxy_index = 0
        self.inflight = {}       # msg_id -> (topic, dmc seq)
        self.sent_upto = {}      # topic id -> highest dmc seq handed to the session this boot
        self.pending_consumed = []
        self.counts = {"acked": 0, "delivered": 0, "rejected": 0, "errors": 0}
        self.online = False
        self.sock = None
        self.addr = None

    # -- the app API --

    def topic(self, name):
        for t in self.topics:
            if t.name == name or t.topic == name:
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
        host, port = self.proxies[self.proxy_index % len(self.proxies)]
        try:
            self.addr = socket.getaddrinfo(host, port)[0][-1]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind(("0.0.0.0", 0))
        except OSError as e:
            self.log("upsycle: cannot open a socket to %s:%d: %s" % (host, port, e))
            return False
        self.sock = s
        now = platform.ticks_ms()
        self.session.start(now, False)
        for t in self.topics:
            self.session.subscribe(t.topic, now)
        self.log("upsycle: proxy link to %s:%d (udp)" % (host, port))
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
        self.session.receive(data, now)

    def turn(self, now):
        s = self.session
        s.poll(now)
        self._events(now)
        self._fill_window(now)
        saved = 0
        for t in self.topics:
            saved += t.save()
        # Acknowledge deliveries only now that their ops are on flash.
        for topic, seq in self.pending_consumed:
            s.consumed(topic, seq)
        self.pending_consumed = []
        return saved

    def outgoing(self):
        return self.session.data_to_send()

    def _events(self, now):
        for ev in self.session.events():
            kind = ev[0]
            if kind == "delivery":
                self._deliver(ev[1], ev[2], ev[4])
            elif kind == "missed":
                self.pending_consumed.append((ev[1], ev[2]))
            elif kind == "acked" or kind == "rejected":
                x = self.inflight.pop(ev[1], None)
                if x is not None:
                    tp = self.by_id[x[0]]
                    tp.acked(x[1])
                    if kind == "acked":
                        self.counts["acked"] += 1
                    else:
                        self.counts["rejected"] += 1
                        self.log("upsycle: proxy refused a reading (%s: %s): dropped" % (ev[2], ev[3]))
            elif kind == "welcome":
                if not self.online:
                    self.log("upsycle: proxy session open")
                self.online = True
            elif kind == "lost":
                self.online = False
                self.log("upsycle: proxy link lost (%s): retrying" % (ev[1],))
                self.session.start(now, False)
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
            upto = self.sent_upto.get(tp.topic, 0)
            for op in tp.outbox:
                if not s.can_publish():
                    break
                seq = O.author_seq(op)[1]
                if seq <= upto:
                    continue
                mid = W.message_id(self.node_id, seq)
                payload = tp.member.seal(op, platform.random_bytes(32), platform.unix_time())
                s.publish(tp.topic, mid, payload, now)
                self.inflight[mid] = (tp.topic, seq)
                upto = seq
                tp.dirty_state = True   # the group sequence number moved
                sealed = True
            self.sent_upto[tp.topic] = upto
        return sealed

    def status(self):
        out = 0
        for t in self.topics:
            out += len(t.outbox)
        return "published %d acked %d delivered %d outbox %d" % (
            sum(t.published for t in self.topics), self.counts["acked"], self.counts["delivered"], out)


async def _wifi(cfg, wdt, log):
    if not cfg.get("wifi"):
        log("upsycle: no WiFi network in the config: using the network as it is")
        return None
    delay = WIFI_RETRY_MIN_MS
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
            await asyncio.sleep_ms(min(LOOP_MAX_MS, delay - waited))
            waited += LOOP_MAX_MS
        delay = min(2 * delay, WIFI_RETRY_MAX_MS)


async def main(cfg, app=None):
    """The node's life: never returns on a board (Ctrl-C cancels it)."""
    log = _log
    wdt = platform.watchdog(WDT_TIMEOUT_MS)
    await _wifi(cfg, wdt, log)
    node = Node(cfg)
    if app is not None:
        app(node)
    if not node.open_link():
        log("upsycle: no proxy configured: running offline")
    last_status = platform.ticks_ms()
    last_line = None
    while True:
        wdt.feed()
        now = platform.ticks_ms()
        node.turn(now)
        if platform.ticks_diff(now, last_status) >= STATUS_EVERY_MS:
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
        d = node.session.next_deadline()
        wait = LOOP_MAX_MS if d is None else max(1, min(LOOP_MAX_MS, platform.ticks_diff(d, now)))
        if sock is None:
            await asyncio.sleep_ms(wait)
            continue
        if not await platform.wait_readable(sock, wait):
            continue
        for _ in range(RX_PER_TURN):
            try:
                data = sock.recvfrom(DATAGRAM_MAX)[0]
            except OSError:
                break   # EAGAIN: nothing more queued
            node.receive(data, platform.ticks_ms())
            wdt.feed()


def run(cfg, app=None):
    """Start the node from main.py. On a board asyncio.run() blocks; on the
    virtual board it starts the task and returns (tools/vboard/README.md)."""
    asyncio.run(_guarded(cfg, app))


async def _guarded(cfg, app):
    try:
        await main(cfg, app)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        # No reset: the same fault would come back at once (a boot loop).
        import sys
        print("upsycle: SAFE MODE: the node stopped on an error; the REPL stays available:")
        sys.print_exception(e)
