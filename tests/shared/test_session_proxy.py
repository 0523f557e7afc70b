# Runs on CPython and in the MicroPython VM: the proxy's side of the edge
# session (session/proxy.py) against the node's.
from shared_protocol.wire import envelope as E
from shared_protocol.session import messages as W
from shared_protocol.session.client import RTO_INITIAL_MS, DEAD_AFTER, OPEN
from shared_protocol.session.proxy import ProxySession
from session_pair import NODE, PROXY, T1, p2c, opened, subscribe


def test_gap_is_dropped_and_go_back_n_recovers():
    c, p = opened()
    subscribe(c, p, T1, 0)
    for seq in (1, 2, 3):
        p.deliver(T1, seq, b"i", b"p", 0)
    p2c(p, c, 0, drop=(0,))                # seq 1 lost: 2 and 3 are a gap
    assert list(c.events()) == []
    p.poll(RTO_INITIAL_MS)
    p2c(p, c, RTO_INITIAL_MS)              # everything in flight again
    assert [e[2] for e in c.events()] == [1, 2, 3]


def test_bad_input_reports_and_changes_nothing():
    c, p = opened()
    cases = [
        (b"\xff", "decode"),                              # not CBOR
        (b"\x83\x02\x18\x30\x41", "decode"),              # envelope version 2
        (b"\x82\x01\x18\xc8", "decode"),                  # unregistered type 200
        (E.REGISTRY.encode("s_welcome", PROXY, 0, 1), "unexpected"),  # a node never sends it
    ]
    for data, code in cases:
        p.receive(data, 0)
        ev = p.events()
        assert len(ev) == 1 and ev[0][0] == "bad" and ev[0][1].startswith(code), (data, ev)
        out = p.data_to_send()
        assert E.REGISTRY.decode(out[0]).name == "error", data
    assert p.node == NODE and p.in_flight() == 0
    # An over-long payload is refused by the envelope bounds.
    big = b"\x85\x01\x18\x36\x50" + T1 + b"\x41m\x59\x04\x01" + b"x" * 1025
    p.receive(big, 0)
    assert p.events()[0][0] == "bad"
    c.receive(b"\xff\x00", 0)
    assert c.events()[0][0] == "error" and c.state == OPEN


def test_publish_before_hello_is_rejected():
    p = ProxySession(PROXY, False, 0)
    p.receive(E.REGISTRY.encode("s_publish", T1, b"m", b"x"), 0)
    assert p.events()[0][:2] == ("bad", W.R_NO_SESSION)
    m = E.REGISTRY.decode(p.data_to_send()[0])
    assert m.name == "s_reject" and m["code"] == W.R_NO_SESSION


def test_proxy_expires_silent_session():
    c, p = opened()
    p.poll(DEAD_AFTER * 1000 - 1)
    assert list(p.events()) == []
    p.poll(DEAD_AFTER * 1000)
    assert list(p.events()) == [("expired",)]
