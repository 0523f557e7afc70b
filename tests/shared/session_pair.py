# Helpers for the session tests (tests/shared/test_session_*.py), on CPython
# and in the MicroPython VM: the edge session's two state machines connected
# back to back (a pair, as in h11's tests), the proxy's store played by the test.
from shared_protocol.session.client import ClientSession, OPEN
from shared_protocol.session.proxy import ProxySession

NODE = b"node-0001"
PROXY = b"proxy-01"
T1 = b"\x01" * 16
T2 = b"\x02" * 16


def pair(reliable=False, window=8):
    c = ClientSession(NODE, window=window, keepalive_ms=1000)
    p = ProxySession(PROXY, reliable, 0)
    c.start(0, reliable)
    return c, p


def c2p(c, p, now, drop=None):
    """Move the client's output to the proxy; returns how many went."""
    out = c.data_to_send()
    for i, m in enumerate(out):
        if drop is None or i not in drop:
            p.receive(m, now)
    return len(out)


def p2c(p, c, now, drop=None):
    out = p.data_to_send()
    for i, m in enumerate(out):
        if drop is None or i not in drop:
            c.receive(m, now)
    return len(out)


def opened(reliable=False, window=8):
    c, p = pair(reliable, window)
    c2p(c, p, 0)
    assert list(p.events()) == [("hello", NODE)]
    assert list(p.data_to_send()) == []          # no welcome until the runner admits it
    p.accept()
    p2c(p, c, 0)
    assert list(c.events()) == [("welcome", PROXY)]
    assert c.state == OPEN
    return c, p


def kinds(events):
    return [e[0] for e in events]


def subscribe(c, p, topic, cursor, now=0):
    c.subscribe(topic, now)
    c2p(c, p, now)
    assert list(p.events()) == [("subscribe", topic)]
    p.subscribed(topic, cursor)
    p2c(p, c, now)
    assert list(c.events()) == [("subscribed", topic, cursor)]
