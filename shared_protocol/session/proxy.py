"""Proxy side of the edge session: a sans-I/O state machine per session.

The proxy's runner feeds it received messages (with ``now`` in ms), acts on
its events (store a publish, record a subscription, advance a cursor) and
answers through its methods (``acked`` after the store has made a publish
durable, ``deliver`` for stored messages). The object keeps only bounded
state: the deliveries in flight (at most ``window``, the smaller of what the
node asked for and the proxy's limit) and the messages to send.

Deliveries over a datagram link are go-back-N: when the oldest unacknowledged
delivery times out, everything in flight is sent again in sequence order,
with the timeout doubling up to RTO_MAX_MS. The node acknowledges
cumulatively per topic (s_dack).

Events (tuples) from ``events()``:
  ("hello", node_id)                   first hello: call accept() to welcome the node
  ("subscribe", topic) / ("unsubscribe", topic)
  ("publish", topic, msg_id, payload)  store it, then call acked() or rejected()
  ("dack", topic, seq)                 the node consumed the topic up to seq
  ("bad", code, detail)                bad input: already answered with an error
  ("bye", reason)                      the node closed the session
  ("status",)                          answer with status() if the link is trusted
  ("expired",)                         nothing heard for DEAD_AFTER keepalives
"""

from shared_protocol import clock
from shared_protocol.wire import cbor
from shared_protocol.wire import envelope as E
from shared_protocol.session import messages as W
from shared_protocol.session.client import RTO_INITIAL_MS, RTO_MAX_MS, DEAD_AFTER

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Error codes sent in core "error" replies.
_E_DECODE = const("decode")            # not CBOR, or not a valid envelope
_E_UNEXPECTED = const("unexpected")    # a message a node must not send
_E_NODE = const("node_changed")        # a second hello with another node id

# The proxy's cap on a node's delivery window: WINDOW_MAX deliveries of at
# most ~1.1 KB each bound a session's retransmission buffer to ~280 KB; most
# nodes ask for far less.
WINDOW_CAP = W.WINDOW_MAX
# Short publishes (s_pub_a) awaiting the store's answer: the runner answers
# each (its own publish window is smaller), so this only bounds a node that
# floods them faster than the store commits.
SHORT_MAX = 2 * W.WINDOW_MAX
# The proxy pings nobody; it only forgets silent nodes. A node that declares
# keepalive 0 gets this one (a minute).
_KEEPALIVE_FALLBACK_MS = const(60000)


class ProxySession:
    # The data-path codec. A host runner may subclass and put faster
    # equivalents here that make the same bytes (host/upsycle/wire_fast.py,
    # checked byte for byte by tests/host/test_wire_fast.py).
    decode = staticmethod(W.decode)
    encode_deliver = staticmethod(W.encode_deliver)
    encode_puback = staticmethod(W.encode_puback)

    def __init__(self, proxy_id, reliable, now, window_cap=WINDOW_CAP, publish_window=W.WINDOW_MAX):
        self.proxy_id = proxy_id
        self.reliable = reliable
        self.node = None
        self.accepted = False
        self.keepalive_ms = _KEEPALIVE_FALLBACK_MS
        self.window = 1
        self.window_cap = window_cap
        self.publish_window = publish_window
        self.last_rx = now
        self._out = []
        self._events = []
        self._inflight = {}     # topic -> list of [seq, encoded]
        self._n_inflight = 0
        self._due = 0
        self._rto = RTO_INITIAL_MS
        self.aliases = []       # the node's short topic table (s_hello_t)
        self._short = {}        # msg_id -> (alias, n) of a short publish not yet answered

    # -- input -------------------------------------------------------------

    def receive(self, data, now):
        try:
            name, v = self.decode(data)
        except (cbor.DecodeError, E.EnvelopeError) as e:
            self._error(_E_DECODE + ":" + e.code, e.message)
            return
        self.last_rx = now
        if name == "s_publish":
            if self.node is None:
                self._reject_no_session(v[1])
            else:
                self._events.append(("publish", v[0], v[1], v[2]))
        elif name == "s_dack":
            if self.node is not None:
                self._on_dack(v[0], v[1], now)
        elif name == "s_pub_a":
            self._on_short_publish(v[0], v[1], v[2])
        elif name == "s_hello":
            self._on_hello(v[0], v[1], v[2])
        elif name == "s_hello_t":
            try:
                aliases = W.check_aliases(v[3])
            except E.EnvelopeError as e:
                self._error(_E_DECODE + ":" + e.code, e.message)
                return
            if self.node is None:
                self.aliases = aliases
            self._on_hello(v[0], v[1], v[2])
        elif name == "ping":
            self._out.append(E.REGISTRY.encode("pong", v[0]))
        elif name == "pong":
            pass
        elif name == "s_subscribe" or name == "s_unsubscribe":
            if self.node is None:
                self._error(W.R_NO_SESSION, "send s_hello first")
            else:
                self._events.append((name[2:], v[0]))
        elif name == "s_bye":
            self._events.append(("bye", v[0]))
        elif name == "s_status_req":
            self._events.append(("status",))
        else:
            self._error(_E_UNEXPECTED, "a node does not send %s" % name)

    def _on_hello(self, node, keepalive_ms, window):
        if self.node is not None and node != self.node:
            self._error(_E_NODE, "this session belongs to another node id")
            return
        if self.node is not None:
            # A repeated hello (its welcome was lost) gets the welcome again.
            if self.accepted:
                self.accept()
            return
        self.node = bytes(node)
        self.keepalive_ms = keepalive_ms if keepalive_ms > 0 else _KEEPALIVE_FALLBACK_MS
        w = window if window > 0 else 1
        self.window = w if w < self.window_cap else self.window_cap
        self._events.append(("hello", self.node))

    def accept(self):
        """The runner admits the session (limits allow it): send the welcome."""
        self.accepted = True
        self._out.append(E.REGISTRY.encode("s_welcome", self.proxy_id, self.keepalive_ms, self.publish_window))

    def _on_dack(self, topic, seq, now):
        items = self._inflight.get(topic)
        if items:
            k = 0
            while k < len(items) and items[k][0] <= seq:
                k += 1
            if k:
                del items[:k]
                self._n_inflight -= k
                self._rto = RTO_INITIAL_MS
                self._due = clock.add(now, RTO_INITIAL_MS)
            if not items:
                del self._inflight[topic]
        self._events.append(("dack", topic, seq))

    def _on_short_publish(self, alias, n, payload):
        if self.node is None:
            self._error(W.R_NO_SESSION, "send s_hello_t first")
            return
        if alias >= len(self.aliases):
            self._error(_E_UNEXPECTED, "alias %d is not in this session's table" % alias)
            return
        if len(self._short) >= SHORT_MAX:
            self._error(W.R_LIMIT, "more than %d short publishes unanswered" % SHORT_MAX)
            return
        topic, base = self.aliases[alias]
        msg_id = W.message_id(self.node, base + n)
        self._short[msg_id] = (alias, n)
        self._events.append(("publish", topic, msg_id, payload))

    def _error(self, code, detail):
        self._out.append(E.REGISTRY.encode("error", code[:32], detail[:200]))
        self._events.append(("bad", code, detail))

    def _reject_no_session(self, msg_id):
        self._out.append(E.REGISTRY.encode("s_reject", msg_id, W.R_NO_SESSION, "send s_hello first"))
        self._events.append(("bad", W.R_NO_SESSION, "publish before hello"))

    # -- answers from the runner -------------------------------------------

    def acked(self, msg_id):
        short = self._short.pop(msg_id, None)
        if short is None:
            self._out.append(self.encode_puback(msg_id))
        else:
            self._out.append(E.REGISTRY.encode("s_ack_a", short[0], short[1]))

    def rejected(self, msg_id, code, detail):
        self._short.pop(msg_id, None)
        self._out.append(E.REGISTRY.encode("s_reject", msg_id, code[:W.CAUSE_MAX], detail[:W.DETAIL_MAX]))

    def subscribed(self, topic, cursor):
        self._out.append(E.REGISTRY.encode("s_subscribed", topic, cursor))

    def unsubscribed(self, topic):
        self.drop_topic(topic)
        self._out.append(E.REGISTRY.encode("s_unsubscribed", topic))

    def status(self, counters):
        self._out.append(E.REGISTRY.encode("s_status", counters))

    def error(self, code, detail):
        self._error(code, detail)

    def bye(self, reason):
        """Tell the node its session ends (e.g. the proxy shuts down)."""
        self._out.append(E.REGISTRY.encode("s_bye", reason))

    def room(self):
        """How many more deliveries may go out now."""
        return self.window - self._n_inflight

    def deliver(self, topic, seq, msg_id, payload, now):
        self._push(topic, seq, self.encode_deliver(topic, seq, msg_id, payload), now)

    def missed(self, topic, upto, count, cause, now):
        self._push(topic, upto, E.REGISTRY.encode("s_missed", topic, upto, count, cause), now)

    def _push(self, topic, seq, data, now):
        items = self._inflight.get(topic)
        if items is None:
            items = self._inflight[topic] = []
        if self._n_inflight == 0:
            self._due = clock.add(now, self._rto)
        items.append([seq, data])
        self._n_inflight += 1
        self._out.append(data)

    def drop_topic(self, topic):
        items = self._inflight.pop(topic, None)
        if items:
            self._n_inflight -= len(items)

    def resend_all(self):
        """Queue every delivery in flight again (a new link for the same node)."""
        for t in sorted(self._inflight):
            for it in self._inflight[t]:
                self._out.append(it[1])

    def in_flight(self):
        return self._n_inflight

    # -- output and timers -------------------------------------------------

    def events(self):
        ev = self._events
        self._events = []
        return ev

    def data_to_send(self):
        out = self._out
        self._out = []
        return out

    def poll(self, now):
        if clock.diff(now, self.last_rx) >= DEAD_AFTER * self.keepalive_ms:
            self._events.append(("expired",))
            return
        if self.reliable or self._n_inflight == 0 or not clock.due(now, self._due):
            return
        self._rto = min(2 * self._rto, RTO_MAX_MS)
        self._due = clock.add(now, self._rto)
        self.resend_all()

    def next_deadline(self):
        d = clock.add(self.last_rx, DEAD_AFTER * self.keepalive_ms)
        if not self.reliable and self._n_inflight:
            d = clock.earliest(d, self._due)
        return d
