"""Limits one node must not be able to use up for everyone: subscriptions
(per session counting the queued ones, per node id, expiry of nodes gone
for good) and topics (forgotten when empty and unsubscribed, bounded per
node id, a burst counted before it commits)."""
import asyncio
import hashlib
import os
import socket
import time

import pytest

import upsycle.proxy.store as store_mod
from shared_protocol import envelope as E
from shared_protocol import framing
from shared_protocol import session_wire as W
from upsycle import topics
from upsycle.client import Client, PublishRejected
from upsycle.proxy.config import Config
from upsycle.proxy.server import Proxy


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


@pytest.fixture
def fast_sweep(monkeypatch):
    # The writer's sweep (retention age, expiry, forgetting topics) every 50 ms.
    monkeypatch.setattr(store_mod, "AGE_SWEEP_S", 0.05)


def config(tmp_path, **limits):
    c = Config()
    c.data = str(tmp_path / "data")
    c.tcp_port = 0
    c.udp_port = 0
    c.allow_plaintext = True     # the raw-socket bursts below speak plaintext
    for k, v in limits.items():
        if k.startswith("ret_"):
            setattr(c.retention, k[4:], v)
        else:
            c.limits[k] = v
    return c


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def started(cfg):
    p = Proxy(cfg)
    await p.start()
    return p


def ident(name):
    return hashlib.sha256(b"limits-test:" + name).digest()


def client(p, name, **kw):
    host, port = p.addresses["tcp"]
    return Client(host, port, identity=ident(name), **kw)


def burst(p, node, frames, settle=1.0):
    """A plaintext session that says hello and then sends every frame in
    one write (one event-loop turn at the proxy); returns what came back."""
    s = socket.create_connection(p.addresses["tcp"], 5)
    s.sendall(framing.frame(E.REGISTRY.encode("s_hello", node, 60000, 4)) +
              b"".join(framing.frame(f) for f in frames))
    dec = framing.StreamDecoder()
    out = []
    end = time.monotonic() + settle
    s.settimeout(0.1)
    while time.monotonic() < end:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        out += [E.REGISTRY.decode(f) for f in dec.feed(data)]
    s.close()
    return out


async def until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.02)
    return True


def test_a_burst_of_subscribes_is_held_to_the_session_limit(tmp_path):
    async def main():
        p = await started(config(tmp_path, max_subscriptions=8))
        loop = asyncio.get_running_loop()
        try:
            node = b"burst-node-00001"
            subs = [E.REGISTRY.encode("s_subscribe", os.urandom(16)) for _ in range(2000)]
            got = await loop.run_in_executor(None, burst, p, node, subs)
            mine = [k for k in p.store.subs if k[0] == node]
            confirmed = sum(1 for m in got if m.name == "s_subscribed")
            print("2000 subscribes in one write: %d durable, %d confirmed" % (len(mine), confirmed))
            assert len(mine) == 8 and confirmed == 8
            assert p.status()["faults"]["subscription_limit"] == 2000 - 8
        finally:
            await p.stop()
    run(main())


def test_one_node_cannot_fill_the_subscriptions_over_many_sessions(tmp_path):
    async def main():
        p = await started(config(tmp_path, max_subscriptions=4, max_node_subscriptions=6))
        loop = asyncio.get_running_loop()
        try:
            node = b"greedy-node-0001"
            for round_ in range(5):   # sessions one after the other, 4 new topics each
                subs = [E.REGISTRY.encode("s_subscribe", b"r%d-%d" % (round_, i)) for i in range(4)]
                await loop.run_in_executor(None, burst, p, node, subs, 0.5)
            mine = [k for k in p.store.subs if k[0] == node]
            assert len(mine) == 6, len(mine)
            assert p.status()["faults"]["node_subscription_limit"] >= 1
            async with client(p, b"someone else") as c:
                await c.subscribe("theirs")       # others are not locked out
        finally:
            await p.stop()
    run(main())


def test_subscriptions_of_nodes_gone_for_good_expire(tmp_path, fast_sweep):
    async def main():
        p = await started(config(tmp_path, max_total_subscriptions=4, subscription_expiry_s=1))
        try:
            async with client(p, b"stays") as stays:
                await stays.subscribe("kept")
                for i in range(3):            # three nodes subscribe and leave
                    async with client(p, b"gone-%d" % i) as c:
                        await c.subscribe("t%d" % i)
                assert len(p.store.subs) == 4
                late = client(p, b"late")
                await late.connect(timeout=5)
                with pytest.raises(asyncio.TimeoutError):
                    await late.subscribe("new", timeout=0.3)   # full, for now
                await late.close()
                assert await until(lambda: len(p.store.subs) == 1), p.store.subs
                async with client(p, b"later") as later:
                    await later.subscribe("new", timeout=5)     # room again
                # the node with a session the whole time kept its subscription
                assert [k[1] for k in p.store.subs if k[0] == stays.node_id] == [topics.resolve("kept")]
        finally:
            await p.stop()
        # after a restart too: nothing expired comes back
        p = await started(config(tmp_path, max_total_subscriptions=4, subscription_expiry_s=1))
        try:
            assert len(p.store.subs) <= 2, p.store.subs
        finally:
            await p.stop()
    run(main())


def test_empty_topics_without_subscribers_are_forgotten(tmp_path, fast_sweep):
    async def main():
        p = await started(config(tmp_path, max_topics=50, ret_max_age_s=1))
        try:
            async with client(p, b"spray") as c:
                for i in range(50):
                    await c.publish(b"random-%02d" % i, b"x")
                with pytest.raises(PublishRejected) as e:
                    await c.publish(b"one too many", b"x")
                assert e.value.code == W.R_TOO_MANY_TOPICS
                before = max(v.last_seq for v in p.store.topics.values())
                # retention empties them; then they are forgotten
                assert await until(lambda: len(p.store.topics) == 0), len(p.store.topics)
                await c.publish(b"random-00", b"again")       # room again
                v = p.store.topics[b"random-00"]
                assert v.first_seq > before, "numbers never go back after a topic is forgotten"
        finally:
            await p.stop()
        p = await started(config(tmp_path, max_topics=50, ret_max_age_s=1))
        try:
            assert set(p.store.topics) <= {b"random-00"}
        finally:
            await p.stop()
    run(main())


def test_a_subscribed_topic_is_not_forgotten_and_numbers_continue(tmp_path, fast_sweep):
    async def main():
        p = await started(config(tmp_path, ret_max_age_s=1))
        try:
            async with client(p, b"pub") as pub, client(p, b"sub") as sub:
                await pub.publish(b"lonely", b"1")
                await sub.subscribe(b"watched")
                assert await until(lambda: b"lonely" not in p.store.topics)
                await asyncio.sleep(0.3)
                assert b"watched" in p.store.topics
                await pub.publish(b"lonely", b"2")         # created again, above the old numbers
                await pub.publish(b"watched", b"w")
                assert (await sub.next_delivery(timeout=5)).payload == b"w"
                assert p.store.topics[b"lonely"].first_seq > 1
        finally:
            await p.stop()
    run(main())


def test_topics_created_are_bounded_per_node_and_a_burst_counts(tmp_path):
    async def main():
        p = await started(config(tmp_path, max_topics=40, max_topics_per_node=10))
        loop = asyncio.get_running_loop()
        try:
            node = b"topic-sprayer-01"
            pubs = [W.encode_publish(os.urandom(16), node[:8] + i.to_bytes(8, "big"), b"x") for i in range(200)]
            got = await loop.run_in_executor(None, burst, p, node, pubs)
            acked = sum(1 for m in got if m.name == "s_puback")
            rejected = [m["code"] for m in got if m.name == "s_reject"]
            print("200 publishes to new topics in one write: %d topics made, %d refused" % (acked, len(rejected)))
            assert acked == 10 and len(p.store.topics) == 10
            assert set(rejected) <= {W.R_TOO_MANY_TOPICS, W.R_LIMIT}
            async with client(p, b"another node") as c:
                for i in range(10):
                    await c.publish(b"mine-%d" % i, b"y")   # others still create topics
            assert len(p.store.topics) == 20
        finally:
            await p.stop()
    run(main())
