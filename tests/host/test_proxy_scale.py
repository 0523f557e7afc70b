"""What keeps the proxy's cost per message and per session flat as sessions
grow (tools/bench/bench_scale.py measures the figures; these tests check
the mechanisms, never a timing): a publish does not walk every
subscription, shutdown does not wait on links one by one."""
import asyncio
import hashlib

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


def test_the_timer_visits_every_link_once_a_sweep_a_slice_per_tick(tmp_path, monkeypatch):
    """Links are visited (hello timeouts, silent sessions) a slice per tick,
    each once per SWEEP_TICKS ticks: 10,000 idle links used to be walked in
    one tick, a stall for every message waiting behind it. Sessions heard
    from within their keepalive are passed over; silent ones still expire."""
    import socket
    import upsycle.proxy.server as server_mod
    from shared_protocol.wire import envelope as E
    from shared_protocol.wire import framing
    n = 60

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
            # stay silent: the sweep finds them due together and expires them
            # (after 3 keepalives), a slice per tick
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
            assert max(per_tick.values()) <= -(-n // server_mod.SWEEP_TICKS)
        finally:
            for s in socks:
                s.close()
            await p.stop()

    run(main())
