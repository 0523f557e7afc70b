"""The per-peer outbox of federated proxies (upsycle/proxy/peers.py):
window, acknowledgements, retransmission oldest first, a link that drops."""
from upsycle.proxy import peers
from upsycle.proxy.peers import PEER_QUEUE_MAX, PEER_WINDOW_MAX, RTO_INITIAL_S, Outbox


class Wire:
    def __init__(self):
        self.sent = []
        self.up = True

    def send(self, data):
        if self.up:
            self.sent.append(data)
        return self.up


def test_window_acks_and_retransmission_oldest_first():
    ob = Outbox()
    for i in range(PEER_WINDOW_MAX + 10):
        assert ob.add(("t", i), b"%d" % i)
    assert ob.add(("t", 0), b"0")            # queued once
    w = Wire()
    ob.pump(w, 100.0)
    assert len(w.sent) == PEER_WINDOW_MAX and ob.inflight == PEER_WINDOW_MAX
    ob.ack(("t", 0))
    ob.ack(("t", 1))
    ob.pump(w, 100.1)
    assert w.sent[-2:] == [b"%d" % PEER_WINDOW_MAX, b"%d" % (PEER_WINDOW_MAX + 1)]
    w.sent = []
    ob.pump(w, 100.05 + RTO_INITIAL_S)       # the oldest unacknowledged time out first
    assert w.sent[:3] == [b"2", b"3", b"4"] and ob.retransmits == PEER_WINDOW_MAX - 2
    assert ob.rto == 2 * RTO_INITIAL_S
    ob.ack(("t", 5))
    assert ob.rto == RTO_INITIAL_S and len(ob) == PEER_WINDOW_MAX + 10 - 3


def test_a_dropped_link_sends_everything_in_flight_again_in_order():
    ob = Outbox()
    for i in range(5):
        ob.add(("t", i), b"%d" % i)
    w = Wire()
    ob.pump(w, 1.0)
    ob.ack(("t", 1))
    ob.unsend()
    assert ob.inflight == 0
    w2 = Wire()
    ob.pump(w2, 1.5)
    assert w2.sent == [b"0", b"2", b"3", b"4"]


def test_a_full_queue_takes_nothing_more():
    ob = Outbox()
    for i in range(PEER_QUEUE_MAX):
        assert ob.add(("t", i), b"x")
    assert not ob.add(("t", -1), b"x") and ob.dropped == 1
    big = Outbox()
    assert not big.add(("t", 0), b"x" * (peers.PEER_QUEUE_BYTES_MAX + 1))
