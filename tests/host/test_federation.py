"""Proxies federated for real: five proxy processes on loopback, a
publisher behind one, subscribers behind three others, one proxy that
follows nothing; a SIGKILL on the path and a partition under steady
publishing (docs/federation.md)."""
import asyncio
import time

import pytest

from federation_rig import Federation, host_of
from upsycle import topics
from upsycle.client import Client

TOPIC = "fed/readings"
PUBLISHER, BYSTANDER, SUBSCRIBERS = 0, 1, (2, 3, 4)
# How long the sites get to converge after the last publish (catch-up runs
# every 0.5 s here; a dial that failed during the partition is retried
# within DIAL_RETRY_MAX_S).
SETTLE_S = 60.0


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


def seq_of(msg_id):
    return int.from_bytes(msg_id[8:], "big")


async def subscriber(i, fed, tmp, got, stop):
    c = Client(host_of(i), fed.ports[i], home=str(tmp / ("sub%d" % i)))
    await c.connect()
    await c.subscribe(TOPIC)
    try:
        while not stop.is_set():
            try:
                d = await c.next_delivery(timeout=0.5)
            except asyncio.TimeoutError:
                continue
            if d.missed:
                got[i].append(("missed", d.missed))
            else:
                got[i].append(bytes(d.msg_id))
    finally:
        await c.close()


async def publisher(fed, tmp, acked, stop, interval):
    c = Client(host_of(PUBLISHER), fed.ports[PUBLISHER], home=str(tmp / "pub"))
    await c.connect()
    n = 0
    pending = []
    try:
        while not stop.is_set():
            n += 1
            fut = await c.publish_nowait(TOPIC, b"reading %d" % n)
            pending.append(fut)
            done = [f for f in pending if f.done()]
            for f in done:
                pending.remove(f)
                acked.append(f.result())
            await asyncio.sleep(interval)
        for f in pending:
            acked.append(await asyncio.wait_for(f, 30))
    finally:
        await c.close()


async def until(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await cond():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def test_five_proxies_carry_a_topic_through_a_crash_and_a_partition(tmp_path):
    fed = Federation(tmp_path, 5, seeds=(0,))
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            return await scenario()
        finally:
            fed.close_relays()

    async def scenario():
        got = {i: [] for i in SUBSCRIBERS}
        stop_subs = asyncio.Event()
        subs = [asyncio.ensure_future(subscriber(i, fed, tmp_path, got, stop_subs)) for i in SUBSCRIBERS]

        async def rings_ready():
            for i in SUBSCRIBERS:
                st = await fed.status(i)
                ring = st["federation"]["rings"].get(tid.hex())
                if not ring or len(set(ring[0] + ring[1])) < len(SUBSCRIBERS) - 1:
                    return False
            return True
        await until(rings_ready, 30, "the subscriber sites' rings")

        acked = []
        stop_pub = asyncio.Event()
        pub = asyncio.ensure_future(publisher(fed, tmp_path, acked, stop_pub, 0.02))
        await asyncio.sleep(2.0)
        # A site on the path dies under load and comes back.
        fed.sigkill(3)
        await asyncio.sleep(1.5)
        await fed.start_proxy(3)
        await asyncio.sleep(2.0)
        # Two groups of proxies lose each other, then meet again.
        fed.partition((0, 1, 2), (3, 4))
        await asyncio.sleep(3.0)
        fed.heal()
        await asyncio.sleep(2.0)
        stop_pub.set()
        await pub
        assert len(acked) > 200
        want = set(acked)

        async def complete():
            return all(want <= set(m for m in got[i] if isinstance(m, bytes)) for i in SUBSCRIBERS)
        try:
            await until(complete, SETTLE_S, "every site to hold every acknowledged message")
        except AssertionError:
            lacking = {}
            for i in SUBSCRIBERS:
                have = set(m for m in got[i] if isinstance(m, bytes))
                miss = sorted(want - have, key=seq_of)
                lacking[i] = (len(miss), [seq_of(m) - seq_of(min(want, key=seq_of)) for m in miss[:10]],
                              len(got[i]), [m for m in got[i] if not isinstance(m, bytes)][:3])
            states = {}
            for i in range(fed.n):
                f = (await fed.status(i))["federation"]
                states[i] = (f["counters"], f["queued"], f["reorder_waiting"], f["rings"],
                             [(p["id"][:6], p["links"], p["queued"], p["in_flight"], p["sent"], p["retransmits"])
                              for p in f["peers"]])
            raise AssertionError("sites lack acknowledged messages: %r; %r" % (lacking, states))
        finally:
            stop_subs.set()
            await asyncio.gather(*subs)
        statuses = {i: await fed.status(i) for i in range(fed.n)}
        return acked, got, statuses

    try:
        acked, got, statuses = asyncio.run(main())
    finally:
        fed.close()
    order = sorted(acked, key=seq_of)
    assert acked == order   # (acknowledged in publish order)
    for i in SUBSCRIBERS:
        # The site's store: every acknowledged message exactly once, in the
        # publisher's order.
        stored = [m for _s, m in fed.rows(i, tid)]
        assert len(stored) == len(set(stored)), i
        assert [m for m in stored if m in set(acked)] == order, "site %d stores out of order" % i
        # Its subscriber: everything, in order, after dropping the
        # redeliveries of a reconnect (at-least-once to the node).
        assert not [m for m in got[i] if isinstance(m, tuple)], "site %d told its subscriber it missed some" % i
        seen = []
        for m in got[i]:
            if m not in seen:
                seen.append(m)
        assert seen == order, "site %d's subscriber got them out of order" % i
    # Relay-free: the proxy none of whose nodes follows the topic holds none of it.
    assert fed.rows(BYSTANDER, tid) == []
    assert statuses[BYSTANDER]["federation"]["topics_carried"] == 0
    for i in range(fed.n):
        print("proxy %d: %s" % (i, statuses[i]["federation"]["counters"]))
    for i in SUBSCRIBERS:
        c = statuses[i]["federation"]["counters"]
        assert c.get("stored", 0) >= len(acked) * (0.5 if i == 3 else 1)   # (3 restarted: counters anew)
    # Proxy 3 and the partitioned group got what they missed by catch-up.
    assert statuses[4]["federation"]["counters"].get("catchup_received", 0) > 0


def test_status_and_peers_show_the_overlay(tmp_path):
    from proxy_rig import cli
    fed = Federation(tmp_path, 2, seeds=(0,))
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            for i in (0, 1):
                c = Client(host_of(i), fed.ports[i], home=str(tmp_path / ("n%d" % i)))
                await c.connect()
                await c.subscribe(TOPIC)
                await c.close()

            async def ringed():
                st = await fed.status(0)
                return bool(st["federation"]["rings"].get(tid.hex(), [[]])[0])
            await until(ringed, 20, "the ring")
            ov = [(await fed.status(i))["federation"]["overlay_id"] for i in (0, 1)]
            hp = "%s:%d" % (host_of(0), fed.ports[0])
            loop = asyncio.get_running_loop()
            st = await loop.run_in_executor(None, lambda: cli("proxy", "status", "--proxy", hp))
            peers = await loop.run_in_executor(None, lambda: cli("proxy", "peers", "--proxy", hp))
            return ov, st, peers
        finally:
            fed.close_relays()

    try:
        ov, st, peers = asyncio.run(main())
    finally:
        fed.close()
    out = st.stdout.decode()
    assert st.returncode == 0, st.stderr
    assert "overlay_id         %s" % ov[0] in out
    assert "topic %s  successors %s" % (tid.hex(), ov[1]) in out
    assert "topics_carried     1" in out
    lines = peers.stdout.decode().splitlines()
    assert peers.returncode == 0 and lines[0].split()[:3] == ["peer", "address", "links"]
    assert lines[1].split()[:2] == [ov[1], "127.0.0.1:%d" % fed.relays[1].port]


def test_the_publishers_proxy_killed_right_after_its_acks_still_delivers_them(tmp_path):
    """Acknowledged means on disk at the origin: what was still in its
    outboxes when it died leaves after the restart (catch-up), although no
    node of that site subscribes and the publisher is gone."""
    fed = Federation(tmp_path, 3, seeds=(0,))
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            got = {1: [], 2: []}
            stop = asyncio.Event()
            subs = [asyncio.ensure_future(subscriber(i, fed, tmp_path, got, stop)) for i in (1, 2)]

            async def ringed():
                st = await fed.status(1)
                return bool(st["federation"]["rings"].get(tid.hex(), [[]])[0])
            await until(ringed, 20, "the ring")
            c = Client(host_of(0), fed.ports[0], home=str(tmp_path / "pub"))
            await c.connect()
            futs = [await c.publish_nowait(TOPIC, b"burst %d" % k) for k in range(300)]
            acked = [await f for f in futs]
            fed.sigkill(0)
            await c.close()
            await asyncio.sleep(1.0)
            await fed.start_proxy(0)

            async def complete():
                return all(set(acked) <= set(got[i]) for i in (1, 2))
            try:
                await until(complete, 60, "both sites to get the burst")
            finally:
                stop.set()
                await asyncio.gather(*subs)
            return acked, got
        finally:
            fed.close_relays()

    try:
        acked, got = asyncio.run(main())
    finally:
        fed.close()
    for i in (1, 2):
        assert [m for _s, m in fed.rows(i, tid)] == acked


def test_proxies_that_know_no_peer_find_each_other_on_the_lan(tmp_path):
    from proxy_rig import free_port
    group = "239.255.77.83:%d" % free_port()
    fed = Federation(tmp_path, 3, seeds=(), extra=["--lan-discovery", group])
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            got = {2: []}
            stop = asyncio.Event()
            sub = asyncio.ensure_future(subscriber(2, fed, tmp_path, got, stop))

            async def linked():
                for i in range(3):
                    if (await fed.status(i))["federation"]["peer_links"] < 1:
                        return False
                return True
            await until(linked, 20, "links made from LAN announcements")

            c = Client(host_of(0), fed.ports[0], home=str(tmp_path / "pub"))
            await c.connect()
            acked = [await c.publish(TOPIC, b"lan %d" % k) for k in range(10)]
            await c.close()

            async def done():
                return set(acked) <= set(got[2])
            try:
                await until(done, 60, "the subscriber at proxy 2")
            finally:
                stop.set()
                await sub
            return [(await fed.status(i))["federation"]["counters"] for i in range(3)]
        finally:
            fed.close_relays()

    try:
        counters = asyncio.run(main())
    finally:
        fed.close()
    assert all(c.get("lan_heard", 0) > 0 for c in counters), counters
