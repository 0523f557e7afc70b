"""Client side of the edge session with a proxy: a sans-I/O state machine.

The same object runs on a board and in the host client. It turns received
messages (one envelope each: a datagram, or a frame from a stream) into events
and keeps the messages to send; the runner owns sockets and clocks and passes
``now`` (milliseconds, any monotonic origin, wrapping on a board: every
tick sum and difference goes through clock.py) into every call.

Reliability (session/messages.py has the messages):
- publish: kept in flight until the proxy's s_puback (sent only once the
  message is durable) or s_reject. At most ``window`` in flight. Over a
  datagram link each is retransmitted with exponential backoff from
  RTO_INITIAL_MS to RTO_MAX_MS; over a stream link the stream does it, and a
  new link (``start``) resends everything still in flight, in order. The
  proxy stores a (topic, message id) once, so retransmits are harmless.
- delivery: the proxy sends a topic's messages in sequence order, go-back-N
  over datagrams. We accept only the next sequence (a gap means a loss: the
  proxy will resend), drop duplicates and re-acknowledge them. The app calls
  ``consumed(topic, seq)`` after it has taken a message; acknowledgements
  (s_dack) are cumulative and only cover consumed messages, so a crash of the
  app between receipt and use makes the proxy deliver again (at least once;
  the message id lets the app drop duplicates).
- keepalive: a ping every ``keepalive_ms`` (the proxy answers pong); the
  link is declared lost after DEAD_AFTER keepalives without a word from it.

Events (tuples, first item the kind) come out of ``events()``:
  ("welcome", proxy_id)                     the session is open
  ("acked", msg_id)                         a publish is durable at the proxy
  ("rejected", msg_id, code, detail)        the proxy refused a publish
  ("subscribed", topic, cursor)
  ("unsubscribed", topic)                   (not for a resubscribe(): its "subscribed" says it is done)
  ("delivery", topic, seq, msg_id, payload)
  ("missed", topic, upto, count, cause)     the proxy dropped messages for us
  ("error", code, detail)                   the proxy or a bad message reported an error
  ("lost", reason)                          the link is dead: start() a new one
"""

from shared_protocol import clock
from shared_protocol.wire import cbor
from shared_protocol.wire import envelope as E
from shared_protocol.session import messages as W
from shared_protocol.errors import LocalError, kind

IDLE = 0    # no link
HELLO = 1   # hello sent, no welcome yet
OPEN = 2    # welcome received

# Retransmission timeout: a LAN or loopback round trip is a few ms, but an
# ESP32 in WiFi power save answers in 100-300 ms; starting at 250 ms avoids
# spurious resends there, and 8 s caps the backoff so a node that comes back
# in range is served within seconds.
RTO_INITIAL_MS = 250
RTO_MAX_MS = 8000
# A node that says nothing for 15 s pings; well under typical NAT UDP timeouts
# (30 s and up), so a session through a home router keeps its mapping.
KEEPALIVE_DEFAULT_MS = 15000
# Three keepalives of silence: one lost ping and its retry are not a death.
DEAD_AFTER = 3
# Publishes in flight: 32 x 1 KB keeps a board's retransmission buffer at
# 32 KB worst case (our heap budget is 48 KB for the whole edge stack: boards
# should pass a smaller window) and fills a LAN path on the host.
WINDOW_DEFAULT = 32
# What events()/data_to_send() return when there is nothing (no allocation).
NOTHING = ()
# Subscriptions per session: a board holds a handful; the proxy enforces its
# own limit too.
SUBSCRIPTIONS_MAX = 64


# Name, base, code (made on first use, see shared_protocol.errors.kind;
# this module raises it through _error, others name it through the module,
# client.SessionError):
# - SessionError: the caller misused the session (window full, unknown
#   topic...).
KINDS = """
SessionError LocalError session
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def _error(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)


__getattr__ = _error


class _Sub:
    __slots__ = ("confirmed", "received", "consumed", "acked", "ack_due", "due", "rto")

    def __init__(self):
        self.confirmed = False
        self.received = -1   # highest sequence taken in order (-1: not known yet)
        self.consumed = -1   # highest sequence the app has consumed
        self.acked = -1      # highest s_dack we sent
        self.ack_due = False
        self.due = 0         # when to resend s_subscribe (datagram links)
        self.rto = RTO_INITIAL_MS


class ClientSession:
    def __init__(self, node_id, window=WINDOW_DEFAULT, keepalive_ms=KEEPALIVE_DEFAULT_MS, aliases=None):
        """aliases: [(topic id, base message sequence), ...] named once per
        link in the hello, so publishes to those topics carry short ids
        (session/messages.py, s_hello_t / s_pub_a / s_ack_a)."""
        if not (0 < len(node_id) <= W.NODE_ID_MAX):
            raise _error("SessionError")("node_id", __debug__ and "a node id is 1..%d bytes" % W.NODE_ID_MAX)
        if not (0 < window <= W.WINDOW_MAX):
            raise _error("SessionError")("window", __debug__ and "window must be 1..%d" % W.WINDOW_MAX)
        self.node_id = bytes(node_id)
        self.window = window
        self.keepalive_ms = keepalive_ms
        self.state = IDLE
        self.reliable = False
        self.proxy_id = None
        self.peer_window = window
        self._out = []
        self._events = []
        self._order = []      # msg ids in flight, in publish order
        self._inflight = {}   # msg_id -> [encoded, due, rto]
        self._subs = {}       # topic -> _Sub
        self._unsubs = {}     # topic -> [due, rto]
        self._resubs = {}     # topic -> True: subscribe again once the unsubscribe is confirmed
        self._last_rx = 0
        self._last_ping = 0
        self._hello_due = 0
        self._hello_rto = RTO_INITIAL_MS
        self.aliases = list(aliases or ())[:W.ALIASES_MAX]
        self._short = {}      # (alias, n) -> msg_id of a short publish in flight

    # -- link ------------------------------------------------------------

    def start(self, now, reliable):
        """A new link to the proxy is up (reliable: a stream, e.g. TCP)."""
        self.reliable = reliable
        self.state = HELLO
        self._out = []
        self._last_rx = now
        self._last_ping = now
        self._hello_rto = RTO_INITIAL_MS
        self._hello_due = clock.add(now, RTO_INITIAL_MS)
        for t in self._subs:
            self._subs[t].confirmed = False
        self._send_hello()

    def stop(self, reason="closed"):
        """The runner lost or closed the link."""
        if self.state != IDLE:
            self.state = IDLE
            self._out = []
            self._events.append(("lost", reason))

    def bye(self):
        """Queue a polite goodbye (the proxy closes the session at once)."""
        if self.state != IDLE:
            self._queue_acks()   # what we consumed must reach the proxy first
            self._out.append(E.REGISTRY.encode("s_bye", "client_close"))

    def _send_hello(self):
        if self.aliases:
            self._out.append(E.REGISTRY.encode("s_hello_t", self.node_id, self.keepalive_ms, self.window,
                                               [[t, b] for t, b in self.aliases]))
        else:
            self._out.append(E.REGISTRY.encode("s_hello", self.node_id, self.keepalive_ms, self.window))

    # -- requests from the app -------------------------------------------

    def in_flight(self):
        return len(self._order)

    def can_publish(self):
        return len(self._order) < (self.peer_window if self.state == OPEN else self.window)

    def publish(self, topic, msg_id, payload, now):
        """Queue a publish; it stays in flight until acked or rejected."""
        if msg_id in self._inflight:
            raise _error("SessionError")("duplicate", __debug__ and "message id already in flight")
        if not self.can_publish():
            raise _error("SessionError")("window_full", __debug__ and "%d publishes already in flight; wait for acks" % len(self._order))
        short = W.alias_for(self.aliases, topic, msg_id, self.node_id) if self.aliases else None
        if short is None:
            data = W.encode_publish(topic, msg_id, payload)  # checks bounds
        else:
            data = E.REGISTRY.encode("s_pub_a", short[0], short[1], payload)
            self._short[short] = msg_id
        self._inflight[msg_id] = [data, clock.add(now, RTO_INITIAL_MS), RTO_INITIAL_MS, short]
        self._order.append(msg_id)
        if self.state == OPEN:
            self._out.append(data)

    def _take_slot(self, topic):
        """Check ``topic`` and that it may hold a subscription slot. A topic
        being started over (resubscribe) keeps its slot while it waits for
        the unsubscribe's confirmation, so its subscribe then always fits."""
        if len(topic) == 0 or len(topic) > W.TOPIC_ID_MAX:
            raise _error("SessionError")("topic", __debug__ and "a topic id is 1..%d bytes" % W.TOPIC_ID_MAX)
        if topic not in self._subs and topic not in self._resubs and \
                len(self._subs) + len(self._resubs) >= SUBSCRIPTIONS_MAX:
            raise _error("SessionError")("subscriptions", __debug__ and "at most %d subscriptions per session" % SUBSCRIPTIONS_MAX)

    def subscribe(self, topic, now):
        if topic in self._subs:
            return
        self._take_slot(topic)
        s = _Sub()
        s.due = clock.add(now, RTO_INITIAL_MS)
        self._subs[topic] = s
        self._unsubs.pop(topic, None)
        self._resubs.pop(topic, None)
        if self.state == OPEN:
            self._out.append(E.REGISTRY.encode("s_subscribe", topic))

    def unsubscribe(self, topic, now):
        self._resubs.pop(topic, None)
        if self._subs.pop(topic, None) is None:
            return
        self._unsubs[topic] = [clock.add(now, RTO_INITIAL_MS), RTO_INITIAL_MS]
        if self.state == OPEN:
            self._out.append(E.REGISTRY.encode("s_unsubscribe", topic))

    def resubscribe(self, topic, now):
        """Start ``topic`` over at the proxy: unsubscribe, and subscribe again
        once the proxy has confirmed it. A proxy forgets a subscriber's
        cursor with its subscription, and a new subscription starts at the
        oldest message it keeps (its retention), so the topic's stored
        history is delivered again: what a node that lost its replica needs.
        Plain s_unsubscribe and s_subscribe, so every proxy does it; the
        re-subscription ends with the usual ("subscribed", topic, cursor).
        """
        self._take_slot(topic)
        self._subs.pop(topic, None)
        self._resubs[topic] = True
        self._unsubs[topic] = [clock.add(now, RTO_INITIAL_MS), RTO_INITIAL_MS]
        if self.state == OPEN:
            self._out.append(E.REGISTRY.encode("s_unsubscribe", topic))

    def consumed(self, topic, seq):
        """The app has taken the delivery (or missed notice) ``seq`` of topic."""
        s = self._subs.get(topic)
        if s is None or seq <= s.consumed:
            return
        if seq > s.received:
            raise _error("SessionError")("seq", __debug__ and "cannot consume %d: only %d received" % (seq, s.received))
        s.consumed = seq
        s.ack_due = True

    # -- input -------------------------------------------------------------

    def receive(self, data, now):
        """One message from the proxy. Bad input yields an error event only."""
        try:
            name, v = W.decode(data)
        except (cbor.DecodeError, E.EnvelopeError) as e:
            self._events.append(("error", e.code, e.message))
            return
        if self.state == IDLE:
            return
        self._last_rx = now
        if name == "s_deliver":
            self._on_deliver(v[0], v[1], ("delivery", v[0], v[1], v[2], v[3]))
        elif name == "s_puback":
            if self._forget(v[0]):
                self._events.append(("acked", v[0]))
        elif name == "s_ack_a":
            mid = self._short.get((v[0], v[1]))
            if mid is not None and self._forget(mid):
                self._events.append(("acked", mid))
        elif name == "s_welcome":
            if self.state == HELLO:
                self._on_welcome(v[0], v[2], now)
        elif name == "s_missed":
            self._on_deliver(v[0], v[1], ("missed", v[0], v[1], v[2], v[3]))
        elif name == "s_reject":
            if self._forget(v[0]):
                self._events.append(("rejected", v[0], v[1], v[2]))
        elif name == "s_subscribed":
            s = self._subs.get(v[0])
            if s is not None and not s.confirmed:
                s.confirmed = True
                cursor = v[1]
                # The proxy resumes at cursor + 1. Our own count wins when we
                # are ahead (the proxy lost cursor updates in a crash: it will
                # resend what we already have, and we drop it).
                if cursor > s.received:
                    s.received = cursor
                if cursor > s.consumed:
                    s.consumed = cursor
                    s.acked = cursor
                self._events.append(("subscribed", v[0], cursor))
        elif name == "s_unsubscribed":
            if self._unsubs.pop(v[0], None) is not None:
                if self._resubs.pop(v[0], None) is not None:
                    self.subscribe(v[0], now)
                else:
                    self._events.append(("unsubscribed", v[0]))
        elif name == "ping":
            self._out.append(E.REGISTRY.encode("pong", v[0]))
        elif name == "pong":
            pass
        elif name == "error":
            self._events.append(("error", v[0], v[1]))
        elif name == "s_bye":
            self.stop(v[0])
        else:
            self._events.append(("error", "unexpected", "proxy sent %s" % name))

    def _on_welcome(self, proxy_id, window, now):
        self.state = OPEN
        if self.proxy_id is not None and proxy_id != self.proxy_id:
            # Another proxy (a node with several, or one whose store was
            # replaced): topic sequences are numbered by each proxy, so what
            # we counted at the last one says nothing here; its own cursor
            # for us (s_subscribed) starts the counts again. The replica or
            # the app drops what it already had, by message id.
            for t in self._subs:
                s = self._subs[t]
                s.received = -1
                s.consumed = -1
                s.acked = -1
                s.ack_due = False
        self.proxy_id = proxy_id
        self.peer_window = min(self.window, window) if window > 0 else 1
        out = self._out
        topics = sorted(self._subs)
        for t in topics:
            s = self._subs[t]
            s.due = clock.add(now, RTO_INITIAL_MS)
            s.rto = RTO_INITIAL_MS
            out.append(E.REGISTRY.encode("s_subscribe", t))
        for t in sorted(self._unsubs):
            out.append(E.REGISTRY.encode("s_unsubscribe", t))
        for mid in self._order:
            rec = self._inflight[mid]
            rec[1] = clock.add(now, RTO_INITIAL_MS)
            rec[2] = RTO_INITIAL_MS
            out.append(rec[0])
        self._events.append(("welcome", proxy_id))

    def _on_deliver(self, topic, seq, event):
        s = self._subs.get(topic)
        if s is None or not s.confirmed:
            return  # not ours (yet): unacknowledged, the proxy resends later
        if event[0] == "missed":
            # A missed notice covers everything up to seq.
            if seq <= s.received:
                s.ack_due = True
                return
            s.received = seq
            self._events.append(event)
            return
        if seq == s.received + 1 or s.received < 0:
            s.received = seq
            self._events.append(event)
        elif seq <= s.received:
            s.ack_due = True   # a duplicate: our ack was lost, say it again
        # else: a gap (a datagram was lost); go-back-N resends from it

    def drop(self, msg_id):
        """Stop sending a publish that another proxy acknowledged (a node
        publishing through all its proxies): its window slot is free, no
        event."""
        self._forget(msg_id)

    def _forget(self, msg_id):
        rec = self._inflight.pop(msg_id, None)
        if rec is None:
            return False
        if rec[3] is not None:
            self._short.pop(rec[3], None)
        self._order.remove(msg_id)
        return True

    # -- output and timers -------------------------------------------------

    def events(self):
        # An idle turn of a board's main loop must not allocate: when there
        # is nothing, hand out the shared empty tuple, not a fresh list.
        ev = self._events
        if not ev:
            return NOTHING
        self._events = []
        return ev

    def data_to_send(self):
        """Messages to send now (each one envelope: a datagram or a frame)."""
        self._queue_acks()
        out = self._out
        if not out:
            return NOTHING
        self._out = []
        return out

    def _queue_acks(self):
        for t in self._subs:
            s = self._subs[t]
            if s.ack_due and s.consumed >= 0 and self.state == OPEN:
                self._out.append(W.encode_dack(t, s.consumed))
                s.acked = s.consumed
                s.ack_due = False

    def poll(self, now):
        """Run timers: retransmissions, keepalive, dead-link detection."""
        if self.state == IDLE:
            return
        if clock.diff(now, self._last_rx) >= DEAD_AFTER * self.keepalive_ms:
            self.stop("timeout")
            return
        # Ping every keepalive whatever else flows: the proxy forgets a node
        # it has not heard from, even one that only receives.
        if clock.diff(now, self._last_ping) >= self.keepalive_ms:
            self._last_ping = now
            self._out.append(E.REGISTRY.encode("ping", now & 0xFFFFFFFF))
        if self.reliable:
            return
        if self.state == HELLO:
            if clock.due(now, self._hello_due):
                self._hello_rto = min(2 * self._hello_rto, RTO_MAX_MS)
                self._hello_due = clock.add(now, self._hello_rto)
                self._send_hello()
            return
        for mid in self._order:
            rec = self._inflight[mid]
            if clock.due(now, rec[1]):
                rec[2] = min(2 * rec[2], RTO_MAX_MS)
                rec[1] = clock.add(now, rec[2])
                self._out.append(rec[0])
        for t in self._subs:
            s = self._subs[t]
            if not s.confirmed and clock.due(now, s.due):
                s.rto = min(2 * s.rto, RTO_MAX_MS)
                s.due = clock.add(now, s.rto)
                self._out.append(E.REGISTRY.encode("s_subscribe", t))
        for t in self._unsubs:
            rec = self._unsubs[t]
            if clock.due(now, rec[0]):
                rec[1] = min(2 * rec[1], RTO_MAX_MS)
                rec[0] = clock.add(now, rec[1])
                self._out.append(E.REGISTRY.encode("s_unsubscribe", t))

    def next_deadline(self):
        """The tick of the next timer (for the runner's sleep), or None."""
        if self.state == IDLE:
            return None
        d = clock.earliest(clock.add(self._last_ping, self.keepalive_ms),
                           clock.add(self._last_rx, DEAD_AFTER * self.keepalive_ms))
        if self.reliable:
            return d
        if self.state == HELLO:
            return clock.earliest(d, self._hello_due)
        for mid in self._order:
            d = clock.earliest(d, self._inflight[mid][1])
        for t in self._subs:
            s = self._subs[t]
            if not s.confirmed:
                d = clock.earliest(d, s.due)
        for t in self._unsubs:
            d = clock.earliest(d, self._unsubs[t][0])
        return d
