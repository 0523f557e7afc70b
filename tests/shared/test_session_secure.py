# Runs on CPython and in the MicroPython VM: both ends of a node's secure
# link, the node's (session/secure_client.py: SecureLink = Noise XX
# initiator + ClientSession) against the proxy's (session/secure_proxy.py:
# SecureResponder + ProxySession), the proxy's store played by the test.
from rig import raises
from shared_protocol.noise.errors import NoiseUsageError
from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W
from shared_protocol.crypto import api
from shared_protocol.rand import Rng
from shared_protocol.session.secure_client import SecureLink, node_id_for
from shared_protocol.session.secure_proxy import SecureResponder
from shared_protocol.session.client import ClientSession
from shared_protocol.session.proxy import ProxySession


class ProxySide:
    """The proxy's end as its runner drives it: responder, node id binding,
    ProxySession (over a stream, the runner cuts the frames)."""

    def __init__(self, key, eph, datagram):
        self.datagram = datagram
        self.noise = SecureResponder(key, eph, datagram)
        self.frames = None if datagram else framing.StreamDecoder()
        self.ps = ProxySession(b"proxy-1", not datagram, 0)
        self.hellos = []
        self.published = []
        self._replies = []   # stream: handshake frames to write

    def _message(self, data, now):
        self.ps.receive(data, now)
        for ev in self.ps.events():
            if ev[0] == "hello":
                self.hellos.append(ev[1])
                if ev[1] == self.noise.node_id:
                    self.ps.accept()
                else:
                    self.ps.error(W.R_NODE_ID, "node id not bound to this key")
            elif ev[0] == "publish":
                self.published.append(ev[3])
                self.ps.acked(ev[2])

    def receive(self, data, now):
        if self.datagram:
            msgs = self.noise.receive(data, now)
        else:
            msgs = []
            for f in self.frames.feed(data):
                if self.noise.secured:
                    msgs.append(self.noise.open(f))
                else:
                    reply = self.noise.handshake_frame(f)
                    if reply is not None:
                        self._replies.append(framing.frame(reply))
        for m in msgs:
            self._message(m, now)

    def out(self):
        if self.datagram:
            out = list(self.noise.packets_to_send())
        else:
            out, self._replies = self._replies, []
        if self.noise.secured:
            for m in self.ps.data_to_send():
                sealed = self.noise.seal(m)
                out.append(sealed if self.datagram else framing.frame(sealed))
        return out


def _pump(link, proxy, now, rounds=6):
    events = []
    for _ in range(rounds):
        moved = False
        for d in link.data_to_send():
            moved = True
            proxy.receive(d, now)
        for d in proxy.out():
            moved = True
            link.receive(d, now)
        events += link.events()
        if not moved:
            break
    return events


def _setup(datagram, node_id=None, pin=None, seed=7):
    r = Rng(seed)
    node_key, proxy_key = r.randbytes(32), r.randbytes(32)
    nid = node_id or node_id_for(api.x25519_public(node_key))
    link = SecureLink(ClientSession(nid, window=4), node_key, datagram=datagram, proxy_key=pin)
    proxy = ProxySide(proxy_key, r.randbytes(32), datagram)
    link.start(0, r.randbytes(32))
    return link, proxy, api.x25519_public(proxy_key)


def test_round_trip_over_datagrams_and_stream():
    for datagram in (True, False):
        link, proxy, proxy_pub = _setup(datagram)
        evs = _pump(link, proxy, 0)
        kinds = [e[0] for e in evs]
        assert ("secured", proxy_pub) in evs, (datagram, kinds)
        assert ("welcome", b"proxy-1") in evs, (datagram, kinds)
        assert link.proxy_static == proxy_pub
        link.session.publish(b"t" * 16, b"m" * 16, b"reading", 1)
        evs = _pump(link, proxy, 1)
        assert ("acked", b"m" * 16) in evs, (datagram, evs)
        assert proxy.published == [b"reading"]
        # the transport really is encrypted: no plaintext on the wire
        link.session.publish(b"t" * 16, b"n" * 16, b"secret-reading", 2)
        wire = b"".join(link.data_to_send())
        assert b"secret-reading" not in wire and len(wire) > 0


def test_the_responder_lets_the_handshake_go_once_secured():
    """A proxy keeps one responder per node: once the transport keys are
    split, the handshake's state (keys, hashes, DH results) is not held;
    a handshake frame after that is a typed usage error."""
    for datagram in (True, False):
        link, proxy, _ = _setup(datagram)
        _pump(link, proxy, 0)
        r = proxy.noise
        assert r.secured and r._hs is None, datagram
        if datagram:
            assert r._udp._hs is None
        else:
            raises(NoiseUsageError, r.handshake_frame, b"\x00" * 48)
        link.session.publish(b"t" * 16, b"m" * 16, b"after", 1)
        evs = _pump(link, proxy, 1)
        assert ("acked", b"m" * 16) in evs and proxy.published == [b"after"], datagram


def test_node_id_is_bound_to_the_static_key():
    r = Rng(1)
    k = r.randbytes(32)
    nid = node_id_for(api.x25519_public(k))
    assert len(nid) == 16 and nid == node_id_for(api.x25519_public(k))
    assert nid != node_id_for(api.x25519_public(r.randbytes(32)))


def test_claiming_another_nodes_id_gets_a_typed_error():
    link, proxy, _ = _setup(True, node_id=b"someone-else-id!")
    evs = _pump(link, proxy, 0)
    assert proxy.hellos == [b"someone-else-id!"]
    assert ("error", W.R_NODE_ID, "node id not bound to this key") in evs, evs
    assert not [e for e in evs if e[0] == "welcome"]


def test_wrong_pinned_proxy_key_fails_the_handshake():
    for datagram in (True, False):
        link, proxy, _ = _setup(datagram, pin=b"\x09" * 32)
        evs = _pump(link, proxy, 0)
        failed = [e for e in evs if e[0] == "link_failed"]
        assert failed and failed[0][1] == "noise_unexpected_static_key", (datagram, evs)
        assert not link.secured and proxy.hellos == []
        assert list(link.data_to_send()) == []


def test_forged_datagrams_are_dropped_and_counted():
    link, proxy, _ = _setup(True)
    _pump(link, proxy, 0)
    before = link.session.state
    for junk in (b"\x04" + b"\x00" * 40, b"\x02" + b"\x01" * 80, b"\x63garbage", b"\x04"):
        link.receive(junk, 5)
    # forged transport, unknown kind, truncated: typed errors, counted; a
    # stale handshake message (kind 2 after the handshake) is ignored
    assert link.dropped == 3
    assert link.session.state == before and link.secured
    link.session.publish(b"t" * 16, b"k" * 16, b"after", 6)
    assert ("acked", b"k" * 16) in _pump(link, proxy, 6)


def test_datagram_handshake_resends_then_gives_up():
    link, proxy, _ = _setup(True)
    first = link.data_to_send()
    assert len(first) == 1 and first[0][0] == 1
    assert link.next_deadline() == 1000
    link.poll(1000)
    assert list(link.data_to_send()) == first      # message 1 repeated
    t = 1000
    evs = []
    for _ in range(10):
        t += 1000
        link.poll(t)
        link.data_to_send()
        evs += link.events()
    failed = [e for e in evs if e[0] == "link_failed"]
    assert failed and failed[0][1] == "noise_handshake_timeout", evs
    assert link.next_deadline() is None and list(link.data_to_send()) == []


def test_stream_garbage_breaks_the_link_with_a_typed_event():
    link, proxy, _ = _setup(False)
    _pump(link, proxy, 0)
    link.receive(b"\x00\x20" + b"\x55" * 32, 3)   # a frame that does not authenticate
    evs = link.events()
    assert evs[0][0] == "link_failed" and evs[0][1] == "noise_decrypt_failed", evs
    assert not link.secured and link.session.state == 0
    # a new link (fresh handshake) works again
    proxy2 = ProxySide(Rng(7).randbytes(64)[32:], Rng(8).randbytes(32), False)
    link.proxy_key = None
    link.start(4, Rng(9).randbytes(32))
    evs = _pump(link, proxy2, 4)
    assert [e for e in evs if e[0] == "welcome"], evs


def test_session_messages_fit_a_secure_datagram():
    # the largest publish plus the secure packet overhead stays within one
    # unfragmented datagram (noise/datagram.py DATAGRAM_MAX + kind byte)
    from shared_protocol.noise.datagram import DATAGRAM_MAX
    biggest = W.encode_publish(b"t" * W.TOPIC_ID_MAX, b"i" * W.MSG_ID_MAX, b"p" * W.PAYLOAD_MAX)
    assert 1 + 8 + len(biggest) + 16 <= DATAGRAM_MAX + 1
    assert E.REGISTRY.decode(biggest).name == "s_publish"


def test_proxy_end_answers_repeats_and_forgets_a_bad_first_packet():
    from shared_protocol.errors import RemoteError
    from rig import raises
    r = Rng(11)
    proxy_key = r.randbytes(32)
    bad = SecureResponder(proxy_key, r.randbytes(32), True)
    raises(RemoteError, bad.receive, b"\x01" + b"\x00" * 5, 0)
    assert not bad.started and not bad.secured
    link, _, _ = _setup(True)
    m1 = link.data_to_send()[0]
    end = SecureResponder(proxy_key, r.randbytes(32), True)
    assert end.receive(m1, 0) == [] and end.started
    m2 = list(end.packets_to_send())
    assert len(m2) == 1 and m2[0][0] == 2
    assert end.answers(m1) and not end.answers(m2[0])
    end.receive(m1, 5)                         # message 2 was lost: the node repeats 1
    assert list(end.packets_to_send()) == m2
    link.receive(m2[0], 6)
    msgs = []
    for packet in link.data_to_send():          # message 3, then the hello inside the link
        msgs += end.receive(packet, 7)
    assert [E.REGISTRY.decode(m).name for m in msgs] == ["s_hello"]
    assert end.secured and end.node_id == link.session.node_id
    assert end.remote_static == link.static_public
