"""The proxy's end of a node's secure link: the Noise XX responder, beside
the node's end (secure_client.py, the initiator), so both ends of a link
read alike and are tested together (tests/shared/test_session_secure.py).
Sans-I/O: the proxy's runner owns sockets, framing and its ProxySession;
this object owns the handshake, the transport keys and the node id the
handshake proved.

Identity binding (docs/proxy.md, "Secure links"): once the handshake is
complete, ``node_id`` is ``node_id_for`` of the static key the node proved;
the runner refuses a hello that names any other id (``node_id_mismatch``).

Datagram mode (UDP, packets with noise/udp.py's kind byte)::

    r = SecureResponder(proxy_static, os.urandom(32), datagram=True)
    msgs = r.receive(packet, now)     # session messages it carried (bytes)
    r.secured, r.node_id              # once message 3 arrived
    for p in r.packets_to_send(): sock.sendto(p, addr)
    r.tick(now)                       # repeats message 2 until message 3 comes
    r.answers(packet)                 # a repeat of the message we answered
    r.seal(message) -> packet

Stream mode (TCP; the runner cuts frames, framing.py)::

    reply = r.handshake_frame(body)   # the reply's body to frame, None when done
    r.open(body) -> message;  r.seal(message) -> body

Every method raises a typed error (noise/errors.py) on bad input and then
changes nothing.
"""
from shared_protocol.noise import errors as nerr
from shared_protocol.noise.events import HandshakeComplete
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.udp import UdpSession
from shared_protocol.session.secure_client import PROLOGUE, node_id_for


class SecureResponder:
    def __init__(self, static_private, ephemeral_private, datagram, cipher=None):
        """static_private: the proxy's X25519 key. ephemeral_private: 32
        fresh random bytes (one per handshake). cipher: applied to each
        transport CipherState when the handshake splits (the host proxy's
        libsodium-backed states, which make the same bytes)."""
        self.datagram = datagram
        self._cipher = cipher
        self.remote_static = None   # the node's static key, once proved
        self.node_id = None         # node_id_for(remote_static)
        hs = Handshake(False, static_private, ephemeral_private, PROLOGUE)
        # Datagram mode: the UdpSession holds the handshake, and lets it go
        # once complete; stream mode: handshake_frame, likewise.
        self._hs = None if datagram else hs
        self._udp = UdpSession(hs, cipher=cipher) if datagram else None
        self._send = None           # stream mode: transport CipherStates
        self._recv = None

    @property
    def secured(self):
        return self.node_id is not None

    def _bind(self, remote_static):
        self.remote_static = remote_static
        self.node_id = node_id_for(remote_static)

    # -- datagram mode -----------------------------------------------------

    @property
    def started(self):
        """False until a handshake message was read: a responder whose first
        packet failed holds nothing worth keeping."""
        return self._udp.handshake_started

    def receive(self, packet, now):
        """One UDP payload -> the session messages it carried."""
        msgs = []
        for ev in self._udp.receive(packet, now):
            if isinstance(ev, HandshakeComplete):
                self._bind(ev.remote_static)
            else:
                msgs.append(ev.data)
        return msgs

    def packets_to_send(self):
        return self._udp.packets_to_send()

    def tick(self, now):
        self._udp.tick(now)

    def next_resend(self):
        return self._udp.next_resend()

    def answers(self, packet):
        return self._udp.answers(packet)

    # -- stream mode ---------------------------------------------------------

    def handshake_frame(self, body):
        """A handshake frame's body in; the body of the frame to answer
        with, or None once the handshake is complete."""
        hs = self._hs
        if hs is None:
            raise nerr.NoiseUsageError(message=__debug__ and "not expecting a handshake message now")
        hs.read_message(body)
        if hs.complete:
            self._send, self._recv = hs.split()
            if self._cipher is not None:
                self._send, self._recv = self._cipher(self._send), self._cipher(self._recv)
            self._bind(hs.remote_static)
            # Only the transport keys are used from here on: the handshake's
            # state (keys, hashes, DH results; ~1 KB on the host) is let go,
            # as noise/udp.py does in datagram mode. A proxy holds one of
            # these per node (docs/proxy.md, memory per session).
            self._hs = None
            return None
        return hs.write_message(b"")

    def open(self, body):
        return self._recv.decrypt_with_ad(b"", body)

    # -- both ----------------------------------------------------------------

    def seal(self, message):
        if self.datagram:
            return self._udp.send(message)
        return self._send.encrypt_with_ad(b"", message)
