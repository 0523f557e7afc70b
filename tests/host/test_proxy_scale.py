"""What keeps the proxy's cost per message and per session flat as sessions
grow (tools/bench/bench_scale.py measures the figures; these tests check
the mechanisms, never a timing): a publish does not walk every
subscription, shutdown does not wait on links one by one."""
import asyncio
import hashlib
import time

import pytest

import upsycle.proxy.federation as federation_mod
from shared_protocol.overlay import profile
from upsycle.client import Client
from upsycle.proxy.config import Config
from upsycle.proxy.server import Proxy


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


def config(tmp_path):
    c = Config()
    c.data = str(tmp_path / "data")
    c.tcp_port = 0
    c.udp_port = 0
    c.allow_plaintext = True
    return c


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def ident(name):
    return hashlib.sha256(b"scale-test:" + name).digest()


def test_a_publish_to_a_topic_the_full_overlay_profile_left_out_walks_no_subscriptions(tmp_path, monkeypatch):
    """With more topics than the overlay profile holds (TOPICS_MAX, 1,024),
    every publish to one left out used to run the whole topic sync (every
    subscription and publisher): ~20 ms per publish at 10,000 sessions. A
    publish now joins its own topic when there is room and otherwise costs
    nothing more; the periodic sync alone walks the lists."""
    monkeypatch.setattr(profile, "TOPICS_MAX", 3)
    monkeypatch.setattr(federation_mod, "TOPIC_SYNC_S", 3600.0)   # the periodic sync: once, at start

    async def main():
        p = Proxy(config(tmp_path))
        await p.start()
        syncs = []
        whole = p.fed._sync_topics

        def counted(now):
            syncs.append(now)
            whole(now)
        p.fed._sync_topics = counted
        try:
            host, port = p.addresses["tcp"]
            async with Client(host, port, identity=ident(b"pub")) as c:
                await asyncio.sleep(0.3)   # the first (start-up) sync has run
                before = len(syncs)
                for i in range(12):
                    await c.publish("scale/%d" % i, b"m%d" % i)   # acknowledged: stored, handed to federation
                assert len(syncs) == before
                # the first three topics were joined at their first publish, the rest stay local
                assert len(p.fed.carried) == 3
                # every message was stored all the same
                assert p.store.stored_totals()[0] == 12
        finally:
            await p.stop()

    run(main())


def test_the_udp_socket_holds_a_burst_from_many_nodes(tmp_path):
    """The kernel's default receive buffer (~208 KB, ~200 datagrams) dropped
    message 3s when 1,000 UDP nodes came up together; the proxy asks for
    UDP_RCVBUF (the kernel grants up to net.core.rmem_max, doubled)."""
    import socket
    from upsycle.proxy.server import UDP_RCVBUF
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())

    async def main():
        p = Proxy(config(tmp_path))
        await p.start()
        try:
            sock = p.udp_transport.get_extra_info("socket")
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            assert got == p.udp_rcvbuf >= 2 * min(UDP_RCVBUF, rmem_max)
        finally:
            await p.stop()

    run(main())


def test_silent_sessions_expire_at_their_deadline_a_bounded_number_per_tick(tmp_path, monkeypatch):
    """Sessions silent for DEAD_AFTER keepalives expire; when many fall due
    together, at most TIMER_VISITS_MAX are visited per tick (10,000 in one
    tick would be a stall for every message waiting behind it)."""
    import socket
    import upsycle.proxy.server as server_mod
    from shared_protocol.wire import envelope as E
    from shared_protocol.wire import framing
    n = 60
    monkeypatch.setattr(server_mod, "TIMER_VISITS_MAX", 7)

    async def main():
        p = Proxy(config(tmp_path))
        await p.start()
        ticks = [0]
        clock = server_mod.now_ms

        def tick_clock():   # called once per tick, at its start
            ticks[0] += 1
            return clock()
        visits = []
        handle = p.handle_events

        def counted(link):
            visits.append((ticks[0], link))
            handle(link)
        socks = []
        try:
            # plaintext sessions that say hello with a 200 ms keepalive, then
            # stay silent: due together (after 3 keepalives), expired a few
            # per tick
            for i in range(n):
                s = socket.create_connection(p.addresses["tcp"], 5)
                s.sendall(framing.frame(E.REGISTRY.encode("s_hello", ident(b"%d" % i), 200, 8), 4096))
                socks.append(s)
            while len(p.sessions) < n:
                await asyncio.sleep(0.01)
            links = set(p.sessions.values())
            monkeypatch.setattr(server_mod, "now_ms", tick_clock)
            p.handle_events = counted
            for _ in range(1000):
                if all(lk.closed for lk in links):
                    break
                await asyncio.sleep(0.01)
            p.handle_events = handle
            assert all(lk.closed for lk in links)
            per_tick = {}
            for t, lk in visits:
                if lk in links:
                    per_tick[t] = per_tick.get(t, 0) + 1
            assert set(lk for t, lk in visits) >= links
            assert max(per_tick.values()) <= 7 and len(per_tick) >= n // 7
        finally:
            for s in socks:
                s.close()
            await p.stop()

    run(main())


class Walked(dict):
    """A dict that counts the entries walks over it yield (iteration,
    keys, values, items): what a job visits, not how long it takes."""

    def __init__(self, *a):
        dict.__init__(self, *a)
        self.visited = 0

    def _walk(self, it):
        for x in it:
            self.visited += 1
            yield x

    def __iter__(self):
        return self._walk(dict.__iter__(self))

    def keys(self):
        return self._walk(dict.keys(self))

    def values(self):
        return self._walk(dict.values(self))

    def items(self):
        return self._walk(dict.items(self))


async def _until(cond, timeout=10.0):
    for _ in range(int(timeout * 100)):
        if cond():
            return
        await asyncio.sleep(0.01)
    assert cond()


def test_the_topic_sync_visits_what_changed_not_every_subscription_and_publisher(tmp_path, monkeypatch):
    """The overlay carries the topics our nodes subscribe or publish to. The
    sync once a second used to walk every durable subscription and every
    recent publisher's topic (30,000 and 10,000 at 10,000 sessions, tens of
    ms a second); it now takes the topics whose subscriptions changed from
    the store and the publishers' topics whose hold ran out, oldest first."""
    monkeypatch.setattr(federation_mod, "TOPIC_SYNC_S", 3600.0)   # run here by hand

    async def main():
        p = Proxy(config(tmp_path))
        await p.start()
        fed = p.fed
        try:
            host, port = p.addresses["tcp"]
            async with Client(host, port, identity=ident(b"sub")) as c:
                subbed = ["sync/sub/%d" % i for i in range(30)]
                for t in subbed:
                    await c.subscribe(t)
                for i in range(10):
                    await c.publish("sync/pub/%d" % i, b"m")
                fed._sync_topics(time.monotonic())
                want = set(p.store.topic_subs) | set(fed.published)
                assert len(want) == 40 and set(fed.carried.values()) == want
                # nothing changed: neither table is walked (the publishers'
                # oldest entry is looked at)
                p.store.subs = Walked(p.store.subs)
                fed.published = Walked(fed.published)
                for _ in range(5):
                    fed._sync_topics(time.monotonic())
                assert p.store.subs.visited == 0 and fed.published.visited <= 5
                assert set(fed.carried.values()) == want
                # an unsubscribe: that topic is left, the rest stay
                gone = next(iter(p.store.topic_subs))
                await c.unsubscribe(gone)
                await _until(lambda: gone not in p.store.topic_subs)
                fed._sync_topics(time.monotonic())
                assert set(fed.carried.values()) == want - {gone}
                # the publishers' hold runs out: their topics are left
                fed._sync_topics(time.monotonic() + federation_mod.PUBLISHER_HOLD_S + 1)
                assert set(fed.carried.values()) == set(p.store.topic_subs) and len(p.store.topic_subs) == 29
                assert p.store.subs.visited == 0 and fed.published.visited <= 5 + 1 + 10 + 1
        finally:
            await p.stop()

    run(main())


def test_topics_left_out_of_a_full_overlay_profile_join_as_it_has_room(tmp_path, monkeypatch):
    """With more wanted topics than the profile holds (TOPICS_MAX), the ones
    left out wait; when a carried one is left, a waiting one is joined,
    without a walk over every subscription."""
    monkeypatch.setattr(profile, "TOPICS_MAX", 3)
    monkeypatch.setattr(federation_mod, "TOPIC_SYNC_S", 3600.0)

    async def main():
        p = Proxy(config(tmp_path))
        await p.start()
        fed = p.fed
        try:
            host, port = p.addresses["tcp"]
            async with Client(host, port, identity=ident(b"sub")) as c:
                for i in range(5):
                    await c.subscribe("full/%d" % i)
                fed._sync_topics(time.monotonic())
                assert len(fed.carried) == 3 and len(fed.waiting) == 2
                assert set(fed.carried.values()) | fed.waiting == set(p.store.topic_subs)
                p.store.subs = Walked(p.store.subs)
                gone = next(iter(fed.carried.values()))
                await c.unsubscribe(gone)
                await _until(lambda: gone not in p.store.topic_subs)
                fed._sync_topics(time.monotonic())
                assert len(fed.carried) == 3 and len(fed.waiting) == 1
                assert gone not in fed.carried.values()
                assert set(fed.carried.values()) | fed.waiting == set(p.store.topic_subs)
                assert p.store.subs.visited == 0
        finally:
            await p.stop()

    run(main())


def test_a_subscribe_counts_the_nodes_queued_subscriptions_without_a_walk(tmp_path):
    """may_subscribe counts a node's subscriptions still queued for the
    store: it used to walk every queued subscription of every node per
    subscribe (thousands while 10,000 sessions come up)."""
    from upsycle.proxy.store import Store

    async def main():
        st = Store(str(tmp_path / "data"), max_node_subscriptions=3)
        st.open()
        done = asyncio.Event()
        st.start(asyncio.get_running_loop(), lambda batch, results: done.set())
        try:
            st._subscribing = Walked(st._subscribing)
            a, b = b"node-a", b"node-b"
            for i in range(3):
                assert st.may_subscribe(a, b"t%d" % i) is None
                st.submit_subscribe(a, b"t%d" % i, None)
            assert st.may_subscribe(a, b"t9")[0] == "node"     # 3 queued: the node's limit
            assert st.may_subscribe(a, b"t1") is None           # one it has queued: no new one
            assert st.may_subscribe(b, b"t9") is None
            assert st._subscribing.visited == 0
            await asyncio.wait_for(done.wait(), 10)
            await _until(lambda: not st._subscribing)
            assert st._subscribing_by == {} and st.node_subs == {a: 3}
            assert st.may_subscribe(a, b"t9")[0] == "node"     # now durable: still the limit
        finally:
            st.close()

    run(main())


def test_the_timer_passes_no_session_that_is_not_due(tmp_path, monkeypatch):
    """A tick costs what is due, not what is open: sessions heard from within
    their keepalive are not looked at (the timer used to read every
    session's last input once a second: 10,000 a second at 10,000
    sessions). Counted as reads of each session's ``last_rx``."""
    import socket
    from shared_protocol.wire import envelope as E
    from shared_protocol.wire import framing
    from upsycle.proxy import fastpath
    n = 40
    reads = [0]

    def get(ps):
        reads[0] += 1
        return ps.__dict__["_last_rx_watched"]

    def put(ps, v):
        ps.__dict__["_last_rx_watched"] = v
    monkeypatch.setattr(fastpath.HostProxySession, "last_rx", property(get, put), raising=False)

    async def main():
        p = Proxy(config(tmp_path))
        await p.start()
        socks = []
        try:
            for i in range(n):   # keepalive 60 s: none is due for minutes
                s = socket.create_connection(p.addresses["tcp"], 5)
                s.sendall(framing.frame(E.REGISTRY.encode("s_hello", ident(b"%d" % i), 60000, 8), 4096))
                socks.append(s)
            await _until(lambda: len(p.sessions) == n)
            reads[0] = 0
            await asyncio.sleep(1.5)   # 30 ticks
            assert reads[0] == 0
            live = [lk for slot, v in p._wheel.items() for lk in v if lk.due == slot]
            assert len(p.sessions) == n and len(live) == n   # one live timer entry each
        finally:
            for s in socks:
                s.close()
            await p.stop()

    run(main())


def test_closed_links_do_not_pile_up_in_the_timer(tmp_path, monkeypatch):
    """A closed link's timer entry waits for its deadline (3 keepalives
    away) holding the link; past TIMER_SLACK more entries than two per open
    link, the closed ones are dropped, so reconnecting nodes do not grow the
    proxy's memory."""
    import socket
    import upsycle.proxy.links as links_mod
    from shared_protocol.wire import envelope as E
    from shared_protocol.wire import framing
    monkeypatch.setattr(links_mod, "TIMER_SLACK", 5)

    async def main():
        p = Proxy(config(tmp_path))
        await p.start()
        try:
            most = 0
            for i in range(40):   # a node reconnecting, keepalive 60 s
                s = socket.create_connection(p.addresses["tcp"], 5)
                s.sendall(framing.frame(E.REGISTRY.encode("s_hello", ident(b"re"), 60000, 8), 4096))
                await _until(lambda: ident(b"re") in p.sessions and not p.sessions[ident(b"re")].closed)
                s.close()
                await _until(lambda: ident(b"re") not in p.sessions)
                most = max(most, p._armed)
            assert most <= 2 * 1 + 5 + 1
            assert sum(len(v) for v in p._wheel.values()) == p._armed and len(p._slots) == len(p._wheel)
        finally:
            await p.stop()

    run(main())
