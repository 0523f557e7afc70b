"""A node's secure link to its proxy: the edge session (session/client.py) carried
inside a Noise_XX transport (noise/). Sans-I/O: the same object runs in the
board firmware (datagram mode over a UDP socket) and in the host client
(stream mode over TCP). Time (``now``, milliseconds) and randomness (the
ephemeral key) are passed in; it never touches sockets or clocks.

Identity binding (docs/proxy.md, "Secure links"): a node's id is
``node_id_for(static_public)`` = the first 16 bytes of
SHA-256("upsycle-node-id" || the node's X25519 static public key). The
proxy learns the static key in the XX handshake (the node proves it holds
the private key) and refuses, with the typed error ``node_id_mismatch``, a
hello that names any other id. So a node cannot claim another node's
subscriptions or cursors.

API::

    sess = ClientSession(node_id_for(x25519_public(static_priv)))
    link = SecureLink(sess, static_priv, datagram=True, proxy_key=None)
    link.start(now, ephemeral_priv)       # a new link: 32 fresh random bytes
    # loop:
    for d in link.data_to_send(): sock.send(d)   # datagram mode: one per datagram
                                                  # stream mode: bytes to write
    link.receive(packet_or_bytes, now)    # what arrived
    link.poll(now)                        # timers (handshake resend, session)
    for ev in link.events(): ...          # session events (session/client.py) plus:
        ("secured", proxy_static_key)     # handshake done; hello follows inside
        ("link_failed", code, detail)     # handshake failed/timed out, wrong
                                          # proxy key, broken stream: start() anew
    link.session.publish(...) / subscribe(...) / consumed(...)  as before

On a board pass ``now=time.ticks_ms()`` (it wraps; clock.py does the tick
arithmetic); ephemeral keys from ``os.urandom(32)``. The
firmware's static key is its identity: keep it in flash; the node id is
``node_id_for(x25519_public(static))``.

``proxy_key``: the proxy's X25519 public key if known (pinned, or stored on
first use); a proxy proving another key fails with
``noise_unexpected_static_key``. Without it any proxy is accepted and its key
comes out in the "secured" event for the caller to store.

Bad datagrams (forged, replayed, garbled) are dropped and counted in
``dropped``; they never change state. In stream mode a bad frame breaks the
link (the byte stream is out of step): "link_failed", then start() again.
"""
from shared_protocol.crypto import api
from shared_protocol.errors import RemoteError
from shared_protocol.noise import errors as nerr
from shared_protocol.noise.events import NEED_DATA, HandshakeComplete
from shared_protocol.noise.udp import UdpSession
from shared_protocol.session import client as sclient

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Mixed into every handshake (Noise §6): both ends must agree on it, so a
# peer speaking another protocol or version fails at the first authenticated
# message instead of being misread.
PROLOGUE = b"upsycle-link/1"
_NODE_ID_TAG = const(b"upsycle-node-id")
# 16 bytes like the node ids clients generated before secure links: 128 bits
# make a collision with another node's key infeasible.
NODE_ID_LEN = 16
# Largest plaintext chunk handed to the stream decoder per call: its buffer
# has a fixed size, so we feed in steps.
_FEED_STEP = const(4096)


def node_id_for(static_public):
    """The node id bound to an X25519 static public key."""
    return api.sha256(_NODE_ID_TAG + bytes(static_public))[:NODE_ID_LEN]


class SecureLink:
    def __init__(self, session, static_private, datagram=True, proxy_key=None):
        """session: a ClientSession (its node id should be node_id_for our
        public key, or the proxy refuses the hello). datagram: True for UDP
        (one packet per datagram), False for a byte stream (TCP)."""
        if len(static_private) != 32:
            raise sclient.SessionError("key", __debug__ and "a static key is 32 bytes")
        if proxy_key is not None and len(proxy_key) != 32:
            raise sclient.SessionError("key", __debug__ and "a proxy key is 32 bytes")
        self.session = session
        self.datagram = datagram
        self.proxy_key = proxy_key
        self.proxy_static = None
        self.dropped = 0
        self._static = bytes(static_private)
        self._noise = None
        self._secured = False
        self._events = []
        self._raw = []   # stream bytes queued (handshake frames)
        self._known = None  # (proxy key, shared secret) for message 1's hint

    @property
    def static_public(self):
        return api.x25519_public(self._static)

    @property
    def secured(self):
        return self._secured

    def start(self, now, ephemeral_private):
        """Open a new link (after a loss, too): a new handshake, then the
        session's hello. ephemeral_private: 32 fresh random bytes."""
        # Imported here, not at the top: the handshake's code (and X25519's)
        # is needed only until the link is secured, and a board can drop it
        # from its heap in between (firmware/platform.py, HANDSHAKE_ONLY).
        from shared_protocol.noise.handshake import Handshake
        hs = Handshake(True, self._static, ephemeral_private, PROLOGUE, self.proxy_key)
        self._secured = False
        self._raw = []
        hint = self._hint(hs)
        if self.datagram:
            self._noise = UdpSession(hs)
            self._noise.start(now, hint)
        else:
            # Stream mode only (host clients over TCP): a board speaks UDP
            # and never loads the stream transport.
            from shared_protocol.noise.stream import NoiseStream
            self._noise = NoiseStream(hs, handshake_payload=hint)
            self._noise.start()

    def _hint(self, hs):
        """Message 1's "seen before" hint (noise/known.py) when the proxy's
        key is known; the DH behind it is done once per proxy key."""
        pk = self.proxy_key
        if pk is None:
            return b""
        from shared_protocol.noise import known
        if self._known is None or self._known[0] != pk:
            self._known = (pk, known.shared_secret(self._static, pk))
        return known.hint(self._known[1], hs.ephemeral_public)

    def stop(self, reason="closed"):
        """The runner closed or lost the link."""
        self._noise = None
        self._secured = False
        self.session.stop(reason)

    def _fail(self, code, detail):
        self._noise = None
        self._secured = False
        self._events.append(("link_failed", code, detail))
        self.session.stop(code)

    def _on_secured(self, ev, now):
        self.proxy_static = ev.remote_static
        self._secured = True
        self._events.append(("secured", ev.remote_static))
        self.session.start(now, not self.datagram)

    def receive(self, data, now):
        """A datagram (datagram mode) or received bytes (stream mode)."""
        n = self._noise
        if n is None:
            return
        if self.datagram:
            try:
                evs = n.receive(data, now)
            except RemoteError as e:
                # A wrong proxy key ends the link; so does the proxy's "no
                # session here" for a packet we sent (noise/udp.py): it
                # restarted, and a new handshake resumes at once.
                if e.code == nerr.UnexpectedStaticKey.code or e.code == nerr.SessionUnknown.code:
                    self._fail(e.code, e.message)
                else:
                    self.dropped += 1
                return
            for ev in evs:
                if isinstance(ev, HandshakeComplete):
                    self._on_secured(ev, now)
                else:
                    self.session.receive(ev.data, now)
            return
        data = bytes(data)
        while True:
            try:
                took = n.receive_data(data[:_FEED_STEP])
                data = data[took:]
                while True:
                    ev = n.next_event()
                    if ev is NEED_DATA:
                        break
                    if isinstance(ev, HandshakeComplete):
                        self._on_secured(ev, now)
                    else:
                        self.session.receive(ev.data, now)
            except RemoteError as e:
                self._fail(e.code, e.message)
                return
            if not data:
                return
            if took == 0:
                self._fail("frame", "stream frame over the decoder's limit")
                return

    def poll(self, now):
        n = self._noise
        if n is None:
            return
        if self.datagram and not self._secured:
            try:
                n.tick(now)
            except nerr.HandshakeTimedOut as e:
                self._fail(e.code, e.message)
            return
        if self._secured:
            self.session.poll(now)

    def next_deadline(self):
        if self._noise is None:
            return None
        if not self._secured:
            return self._noise.next_resend() if self.datagram else None
        return self.session.next_deadline()

    def events(self):
        sev = self.session.events()
        ev = self._events
        if not ev:
            return sev  # nothing of our own: no allocation on an idle turn
        self._events = []
        ev.extend(sev)
        return ev

    def data_to_send(self):
        """Datagram mode: a list of datagrams. Stream mode: a list of byte
        strings to write in order."""
        n = self._noise
        if n is None:
            return ()   # no link yet: no allocation on an idle turn
        if self.datagram:
            out = n.packets_to_send()
            if self._secured:
                msgs = self.session.data_to_send()
                if msgs:
                    out = list(out)
                    for m in msgs:
                        out.append(n.send(m))
            return out
        out = []
        hs = n.data_to_send()
        if hs:
            out.append(hs)
        if self._secured:
            for m in self.session.data_to_send():
                out.append(n.send(m))
        return out
