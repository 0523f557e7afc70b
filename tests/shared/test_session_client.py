# Runs on CPython and in the MicroPython VM: the node's side of the edge
# session (session/client.py) against the proxy's.
from shared_protocol.wire import envelope as E
from shared_protocol.session import messages as W
from shared_protocol.session.client import (ClientSession, SessionError, RTO_INITIAL_MS, DEAD_AFTER,
                                            OPEN, IDLE, SUBSCRIPTIONS_MAX)
from shared_protocol.session.proxy import ProxySession
from rig import raises
from session_pair import NODE, PROXY, T1, T2, pair, c2p, p2c, opened, kinds, subscribe


def test_hello_welcome_and_windows():
    c, p = opened(window=5)
    assert p.node == NODE
    assert p.window == 5
    assert c.peer_window == 5


def test_publish_acked_only_when_proxy_says_durable():
    c, p = opened()
    mid = W.message_id(NODE, 1)
    c.publish(T1, mid, b"\x00\xffopaque", 0)
    c2p(c, p, 1)
    assert list(p.events()) == [("publish", T1, mid, b"\x00\xffopaque")]
    p2c(p, c, 2)
    assert list(c.events()) == [] and c.in_flight() == 1   # nothing acked yet
    p.acked(mid)
    p2c(p, c, 3)
    assert list(c.events()) == [("acked", mid)]
    assert c.in_flight() == 0


def test_reject_is_typed_and_frees_the_slot():
    c, p = opened()
    mid = W.message_id(NODE, 2)
    c.publish(T1, mid, b"x", 0)
    c2p(c, p, 0)
    p.events()
    p.rejected(mid, W.R_STORAGE_FULL, "disk full")
    p2c(p, c, 0)
    assert list(c.events()) == [("rejected", mid, W.R_STORAGE_FULL, "disk full")]
    assert c.can_publish()


def test_window_full_is_a_local_error():
    c, p = opened(window=2)
    c.publish(T1, b"a", b"1", 0)
    c.publish(T1, b"b", b"2", 0)
    e = raises(SessionError, c.publish, T1, b"c", b"3", 0)
    assert e.code == "window_full"
    e = raises(SessionError, c.publish, T1, b"a", b"again", 0)
    assert e.code == "duplicate"


def test_datagram_publish_retransmits_with_backoff_until_acked():
    c, p = opened()
    mid = b"m1"
    c.publish(T1, mid, b"x", 0)
    c.data_to_send()                       # lost on the air
    c.poll(RTO_INITIAL_MS - 1)
    assert list(c.data_to_send()) == []
    c.poll(RTO_INITIAL_MS)
    assert len(c.data_to_send()) == 1      # first retransmission
    c.poll(RTO_INITIAL_MS + 2 * RTO_INITIAL_MS - 1)
    assert list(c.data_to_send()) == []          # backoff doubled
    c.poll(3 * RTO_INITIAL_MS)
    out = c.data_to_send()
    assert len(out) == 1
    p.receive(out[0], 800)
    assert kinds(p.events()) == ["publish"]
    p.acked(mid)
    p2c(p, c, 801)
    c.poll(100000 - 1)
    assert [m for m in c.data_to_send() if E.REGISTRY.decode(m).name == "s_publish"] == []


def test_stream_link_resends_in_flight_after_reconnect_in_order():
    c, p = opened(reliable=True)
    for i in range(3):
        c.publish(T1, b"m%d" % i, b"x", 0)
    c.data_to_send()                       # the link died with them
    c.stop("disconnected")
    assert list(c.events()) == [("lost", "disconnected")]
    p2 = ProxySession(PROXY, True, 10)
    c.start(10, True)
    c2p(c, p2, 10)
    assert list(p2.events()) == [("hello", NODE)]
    p2.accept()
    p2c(p2, c, 10)
    c2p(c, p2, 11)
    assert [e[2] for e in p2.events()] == [b"m0", b"m1", b"m2"]


def test_another_proxy_numbers_the_topic_its_own_way():
    # A node with several proxies moves to the next one: that proxy's
    # sequences are its own, lower than what the first one had sent.
    c, p = opened(reliable=True)
    subscribe(c, p, T1, 0)
    for seq in (1, 2, 3):
        p.deliver(T1, seq, b"id%d" % seq, b"p", 0)
    p2c(p, c, 0)
    assert [e[2] for e in c.events()] == [1, 2, 3]
    c.consumed(T1, 3)
    c.stop("disconnected")
    c.events()
    c.start(10, True)
    p2 = ProxySession(b"proxy-02", True, 10)
    c2p(c, p2, 10)
    p2.events()
    p2.accept()
    p2c(p2, c, 10)
    assert list(c.events()) == [("welcome", b"proxy-02")]
    c2p(c, p2, 10)
    assert list(p2.events()) == [("subscribe", T1)]
    p2.subscribed(T1, 0)
    p2.deliver(T1, 1, b"id1", b"p", 10)      # the same message under its own numbers
    p2.deliver(T1, 2, b"id9", b"p", 10)
    p2c(p2, c, 10)
    assert [e[0] for e in c.events()] == ["subscribed", "delivery", "delivery"]
    c.consumed(T1, 2)
    acks = [E.REGISTRY.decode(m) for m in c.data_to_send()]
    assert [(m.name, m["seq"]) for m in acks] == [("s_dack", 2)]
    # The same proxy again (a reconnect): the counts stay.
    c.stop("disconnected")
    c.events()
    c.start(20, True)
    p3 = ProxySession(b"proxy-02", True, 20)
    c2p(c, p3, 20)
    p3.events()
    p3.accept()
    p2c(p3, c, 20)
    c.events()
    c2p(c, p3, 20)
    p3.events()
    p3.subscribed(T1, 1)                       # it lost a cursor move in a crash
    p3.deliver(T1, 2, b"id9", b"p", 20)
    p2c(p3, c, 20)
    assert [e[0] for e in c.events()] == ["subscribed"]   # 2 was had: dropped


def test_delivery_in_order_and_acks_cover_consumed_only():
    c, p = opened()
    subscribe(c, p, T1, 4)
    for seq in (5, 6, 7):
        p.deliver(T1, seq, b"id%d" % seq, b"p%d" % seq, 0)
    p2c(p, c, 0)
    ev = c.events()
    assert [e[2] for e in ev] == [5, 6, 7]
    assert list(c.data_to_send()) == []          # nothing consumed: no ack
    c.consumed(T1, 6)
    out = c.data_to_send()
    assert len(out) == 1
    m = E.REGISTRY.decode(out[0])
    assert (m.name, m["topic"], m["seq"]) == ("s_dack", T1, 6)
    p.receive(out[0], 1)
    assert list(p.events()) == [("dack", T1, 6)]
    assert p.in_flight() == 1
    assert p.room() == 7


def test_duplicate_delivery_is_dropped_and_reacknowledged():
    c, p = opened()
    subscribe(c, p, T1, 0)
    p.deliver(T1, 1, b"i", b"p", 0)
    p2c(p, c, 0)
    assert len(c.events()) == 1
    c.consumed(T1, 1)
    c.data_to_send()                       # the ack is lost
    p.resend_all()
    p2c(p, c, 1)
    assert list(c.events()) == []                # not delivered twice
    out = c.data_to_send()
    assert [E.REGISTRY.decode(m).name for m in out] == ["s_dack"]


def test_missed_notice_moves_the_cursor():
    c, p = opened()
    subscribe(c, p, T1, 0)
    p.missed(T1, 10, 10, W.MISSED_RETENTION, 0)
    p.deliver(T1, 11, b"i", b"p", 0)
    p2c(p, c, 0)
    ev = c.events()
    assert ev[0] == ("missed", T1, 10, 10, W.MISSED_RETENTION)
    assert ev[1][0] == "delivery" and ev[1][2] == 11


def test_deliveries_before_subscribed_are_not_taken():
    c, p = opened()
    c.subscribe(T2, 0)
    c.data_to_send()
    p.deliver(T2, 1, b"i", b"p", 0)
    p2c(p, c, 0)
    assert list(c.events()) == []


def test_keepalive_pings_and_declares_lost():
    c, p = opened()
    c.poll(999)
    assert list(c.data_to_send()) == []
    c.poll(1000)
    out = c.data_to_send()
    assert [E.REGISTRY.decode(m).name for m in out] == ["ping"]
    p.receive(out[0], 1000)
    p2c(p, c, 1001)                        # pong keeps the link alive
    c.poll(1001 + DEAD_AFTER * 1000 - 1)
    assert c.state == OPEN
    c.poll(1001 + DEAD_AFTER * 1000)
    assert c.state == IDLE
    assert ("lost", "timeout") in c.events()


def test_hello_retransmitted_on_datagrams_and_welcome_repeated():
    c, p = pair()
    c.data_to_send()                       # hello lost
    c.poll(RTO_INITIAL_MS)
    c2p(c, p, RTO_INITIAL_MS)
    assert list(p.events()) == [("hello", NODE)]
    p.accept()
    p2c(p, c, RTO_INITIAL_MS, drop=(0,))   # welcome lost
    c.poll(3 * RTO_INITIAL_MS)
    c2p(c, p, 3 * RTO_INITIAL_MS)
    assert list(p.events()) == []                # reported once
    p2c(p, c, 3 * RTO_INITIAL_MS)
    assert c.state == OPEN


def test_resubscribe_starts_the_topic_over_at_the_proxy():
    # A node that lost its replica: unsubscribe (the proxy forgets its
    # cursor), then subscribe again once that is confirmed; the proxy's new
    # cursor (the oldest message it keeps) wins even though it is lower.
    c, p = opened()
    subscribe(c, p, T1, 40)
    c.resubscribe(T1, 1)
    assert c2p(c, p, 1) == 1
    assert list(p.events()) == [("unsubscribe", T1)]
    p.deliver(T1, 41, b"i", b"p", 1)       # in flight before the unsubscribe: not taken
    p2c(p, c, 1)
    assert list(c.events()) == []
    p.unsubscribed(T1)
    p2c(p, c, 2)
    assert list(c.events()) == []          # no "unsubscribed": the subscribe follows
    out = c.data_to_send()
    assert [E.REGISTRY.decode(m).name for m in out] == ["s_subscribe"]
    p.receive(out[0], 2)
    assert list(p.events()) == [("subscribe", T1)]
    p.subscribed(T1, 0)
    p.deliver(T1, 1, b"i1", b"p1", 2)
    p2c(p, c, 2)
    ev = c.events()
    assert ev[0] == ("subscribed", T1, 0)
    assert ev[1][0] == "delivery" and ev[1][2] == 1


def test_resubscribe_survives_losses_and_a_new_link():
    c, p = opened()
    subscribe(c, p, T1, 7)
    c.resubscribe(T1, 0)
    c.data_to_send()                       # the unsubscribe is lost
    c.poll(RTO_INITIAL_MS)
    out = c.data_to_send()
    assert [E.REGISTRY.decode(m).name for m in out] == ["s_unsubscribe"]
    c.start(RTO_INITIAL_MS + 1, False)     # a new link: hello, then the unsubscribe again
    p2 = ProxySession(PROXY, False, 0)
    c2p(c, p2, RTO_INITIAL_MS + 1)
    p2.accept()
    p2c(p2, c, RTO_INITIAL_MS + 1)
    out = c.data_to_send()
    assert [E.REGISTRY.decode(m).name for m in out] == ["s_unsubscribe"]
    # Unsubscribing cancels a resubscribe in progress: nothing comes back.
    c.unsubscribe(T1, RTO_INITIAL_MS + 2)
    p2.unsubscribed(T1)
    p2c(p2, c, RTO_INITIAL_MS + 3)
    assert kinds(c.events()) == ["welcome", "unsubscribed"]
    assert [E.REGISTRY.decode(m).name for m in c.data_to_send()] == []
    assert raises(SessionError, c.resubscribe, b"", 0)


def test_a_topic_started_over_keeps_its_subscription_slot():
    # While a resubscribe waits for the proxy's confirmation the topic is in
    # no subscription, yet its subscribe must fit when the confirmation
    # comes: a new topic cannot take the slot meanwhile.
    c, p = opened()
    topics = [b"t%03d" % i for i in range(SUBSCRIPTIONS_MAX)]
    for t in topics:
        c.subscribe(t, 0)
    c.resubscribe(topics[0], 1)
    e = raises(SessionError, c.subscribe, b"newcomer", 1)
    assert e.code == "subscriptions"
    c2p(c, p, 1)
    p.unsubscribed(topics[0])
    p2c(p, c, 2)
    names = [E.REGISTRY.decode(m).name for m in c.data_to_send()]
    assert "s_subscribe" in names
    assert topics[0] in c._subs and len(c._subs) == SUBSCRIPTIONS_MAX


def test_short_ids_named_once_per_link():
    # The hello names T1 with a base; publishes to T1 under our ids then carry
    # (alias, n), and the proxy's runner still sees the whole topic and id.
    base = 7 << 32
    c = ClientSession(NODE, window=8, keepalive_ms=1000, aliases=[(T1, base)])
    p = ProxySession(PROXY, False, 0)
    c.start(0, False)
    out = c.data_to_send()
    assert E.REGISTRY.decode(out[0]).name == "s_hello_t"
    for m in out:
        p.receive(m, 0)
    assert list(p.events()) == [("hello", NODE)]
    p.accept()
    p2c(p, c, 0)
    assert list(c.events()) == [("welcome", PROXY)]
    mid = W.message_id(NODE, base + 300)
    c.publish(T1, mid, b"sealed", 1)
    other = W.message_id(NODE, 5)              # below the base: the long form
    c.publish(T1, other, b"x", 1)
    c.publish(T2, W.message_id(NODE, base + 1), b"y", 1)   # not in the table: the long form
    out = c.data_to_send()
    assert [E.REGISTRY.decode(m).name for m in out] == ["s_pub_a", "s_publish", "s_publish"]
    assert len(out[0]) == len(W.encode_publish(T1, mid, b"sealed")) - 31   # 14 bytes for 45 (one-byte type)
    for m in out:
        p.receive(m, 2)
    ev = list(p.events())
    assert ev[0] == ("publish", T1, mid, b"sealed")
    for e in ev:
        p.acked(e[2])
    acks = p.data_to_send()
    assert E.REGISTRY.decode(acks[0]).name == "s_ack_a" and len(acks[0]) < 10
    for m in acks:
        c.receive(m, 3)
    assert sorted(e[1] for e in c.events()) == sorted([mid, other, W.message_id(NODE, base + 1)])
    assert c.in_flight() == 0
    # a retransmitted short publish after a new link carries the same ids
    mid2 = W.message_id(NODE, base + 301)
    c.publish(T1, mid2, b"again", 4)
    c.data_to_send()
    c.start(5, False)
    p2 = ProxySession(PROXY, False, 5)
    for m in c.data_to_send():
        p2.receive(m, 5)
    p2.accept()
    p2c(p2, c, 5)
    for m in c.data_to_send():
        p2.receive(m, 6)
    assert [e for e in p2.events() if e[0] == "publish"] == [("publish", T1, mid2, b"again")]


def test_short_publish_attacks_change_nothing():
    c, p = opened()
    # no table in this session: an alias names nothing
    p.receive(E.REGISTRY.encode("s_pub_a", 0, 1, b"x"), 1)
    assert kinds(p.events()) == ["bad"]
    # before any hello
    p2 = ProxySession(PROXY, False, 0)
    p2.receive(E.REGISTRY.encode("s_pub_a", 0, 1, b"x"), 1)
    assert kinds(p2.events()) == ["bad"]
    # a malformed table is refused and opens no session
    p3 = ProxySession(PROXY, False, 0)
    p3.receive(E.REGISTRY.encode("s_hello_t", NODE, 1000, 8, [[T1, -1]]), 1)
    p3.receive(E.REGISTRY.encode("s_hello_t", NODE, 1000, 8, [["t", 1]]), 1)
    assert kinds(p3.events()) == ["bad", "bad"] and p3.node is None
    # an ack for a short id we never sent is ignored
    c.receive(E.REGISTRY.encode("s_ack_a", 0, 9), 2)
    assert list(c.events()) == []
