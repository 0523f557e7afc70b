# Runs on CPython and in the MicroPython VM: the Noise session over UDP with
# lost, repeated and forged packets.
from rig import raises
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.stream import HandshakeComplete, Message
from shared_protocol.noise.errors import BadPacket, HandshakeTimedOut, SessionUnknown
from shared_protocol.noise.udp import (HS1_SIZE, UdpSession,
                                       no_session_answer)
from shared_protocol.noise.errors import DecryptFailed, HandshakeFailed, ReplayedMessage
from shared_protocol.rand import Rng


def _sessions(max_tries=8):
    r = Rng(99)
    a = UdpSession(Handshake(True, r.randbytes(32), r.randbytes(32), b"upsycle/1"), max_tries=max_tries)
    b = UdpSession(Handshake(False, r.randbytes(32), r.randbytes(32), b"upsycle/1"), max_tries=max_tries)
    return a, b


def _run(a, b, drop, steps=40):
    """Deliver packets between a and b, one time step (1 s) at a time,
    dropping the n-th packet sent when n is in ``drop``. Returns events."""
    sent = [0]
    events = {id(a): [], id(b): []}
    now = 0
    a.start(now)
    for _ in range(steps):
        for src, dst in ((a, b), (b, a)):
            for p in src.packets_to_send():
                sent[0] += 1
                if sent[0] in drop:
                    continue
                events[id(dst)] += dst.receive(p, now)
        if a.established and b.established:
            break
        now += 1000
        a.tick(now)
        b.tick(now)
    return events[id(a)], events[id(b)]


def test_handshake_without_loss():
    a, b = _sessions()
    ea, eb = _run(a, b, drop=())
    assert a.established and b.established
    assert isinstance(ea[0], HandshakeComplete) and isinstance(eb[0], HandshakeComplete)
    ev = b.receive(a.send(b"reading"), 0)
    assert isinstance(ev[0], Message) and ev[0].data == b"reading"
    assert a.receive(b.send(b"ack"), 0)[0].data == b"ack"


def test_handshake_survives_each_message_lost_once():
    # (message 3 lost: test_lost_message_3_is_answered_by_no_session)
    for lost in (1, 2):
        a, b = _sessions()
        _run(a, b, drop=(lost,))
        assert a.established and b.established, "lost packet %d" % lost
        assert b.receive(a.send(b"x"), 0)[0].data == b"x"


def test_handshake_survives_repeated_losses():
    a, b = _sessions()
    _run(a, b, drop=(1, 2, 4, 5))
    assert a.established and b.established


def test_handshake_times_out():
    a, b = _sessions(max_tries=3)
    a.start(0)
    a.packets_to_send()
    a.tick(1000)
    a.tick(2000)
    assert len(a.packets_to_send()) == 2
    e = raises(HandshakeTimedOut, a.tick, 3000)
    assert e.code == "noise_handshake_timeout"


def test_forged_and_replayed_packets_change_nothing():
    a, b = _sessions()
    a.start(0)
    p1 = a.packets_to_send()[0]
    b.receive(p1, 0)
    p2 = b.packets_to_send()[0]
    bad = bytearray(p2)
    bad[-1] ^= 1
    raises(HandshakeFailed, a.receive, bytes(bad), 0)
    raises(BadPacket, a.receive, b"\x09abc", 0)
    raises(BadPacket, a.receive, b"", 0)
    a.receive(p2, 0)                    # the real one still completes
    b.receive(a.packets_to_send()[0], 0)
    assert a.established and b.established
    d = a.send(b"once")
    assert b.receive(d, 0)[0].data == b"once"
    raises(ReplayedMessage, b.receive, d, 0)
    bad = bytearray(a.send(b"two"))
    bad[5] ^= 1
    raises(DecryptFailed, b.receive, bytes(bad), 0)


def test_lost_message_3_is_answered_by_no_session():
    a, b = _sessions()
    _run(a, b, drop=(3,))
    assert a.established and not b.established
    d = a.send(b"hello")
    assert b.receive(d, 0) == []          # no session yet: dropped
    ans = no_session_answer(d)
    assert len(ans) < len(d)               # never larger than what it answers
    e = raises(SessionUnknown, a.receive, ans, 0)
    assert e.code == "noise_session_unknown"


def test_no_session_answer_about_someone_elses_packet_is_ignored():
    a, b = _sessions()
    _run(a, b, drop=())
    for _ in range(10):
        a.send(b"x")
    old = a.send(b"long ago")
    for _ in range(10):
        a.send(b"y")                       # 'old' is out of the remembered tags
    assert a.receive(no_session_answer(old), 0) == []
    assert a.receive(b"\x05" + bytes(16), 0) == []
    assert no_session_answer(b"\x04" + bytes(17)) is None   # too short to answer (kind, 2-byte nonce, tag: 19)
    assert a.established


def test_answers_are_never_larger_and_the_responder_never_repeats_unasked():
    a, b = _sessions()
    a.start(0)
    m1 = a.packets_to_send()[0]
    assert len(m1) == HS1_SIZE
    raises(BadPacket, b.receive, m1[:33], 0)   # an unpadded message 1
    b.receive(m1, 0)
    m2 = b.packets_to_send()[0]
    assert len(m2) <= len(m1)
    for t in range(1, 20):
        b.tick(t * 1000)
        assert b.packets_to_send() == ()     # no message 2 on a timer
    b.receive(m1, 20000)                   # the initiator repeated message 1
    assert b.packets_to_send() == [m2]


def test_no_session_answer_names_any_of_the_latest_8_packets():
    # the tags live in a ring of 8 that wraps: after 21 sends the latest 8
    # are known, the 9th latest is not
    a, b = _sessions()
    _run(a, b, drop=())
    sent = [a.send(b"p%d" % i) for i in range(21)]
    assert a.receive(no_session_answer(sent[-9]), 0) == []
    for d in sent[-8:]:
        raises(SessionUnknown, a.receive, no_session_answer(d), 0)


def test_message_2_repeated_after_the_first_transport_packet_gets_no_answer():
    # an honest responder repeats message 2 only before it has message 3;
    # once its transport packets arrive, the initiator lets the answer go
    r = Rng(5)
    a = UdpSession(Handshake(True, r.randbytes(32), r.randbytes(32), b"upsycle/1"))
    b = UdpSession(Handshake(False, r.randbytes(32), r.randbytes(32), b"upsycle/1"))
    a.start(0)
    b.receive(a.packets_to_send()[0], 0)
    m2 = b.packets_to_send()[0]
    a.receive(m2, 0)
    m3 = a.packets_to_send()[0]
    assert a.receive(m2, 0) == [] and a.packets_to_send() == [m3]   # message 3 again
    b.receive(m3, 0)
    assert a.receive(b.send(b"data"), 0)[0].data == b"data"
    assert a.receive(m2, 0) == [] and a.packets_to_send() == ()
