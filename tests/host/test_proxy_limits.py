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
from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W
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


def plain_session(p, src, node):
    """A plaintext TCP session from source address src; returns the socket
    once welcomed, or the error envelope's detail (str)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(p.addresses["tcp"])
    s.sendall(framing.frame(E.REGISTRY.encode("s_hello", node, 60000, 4)))
    dec = framing.StreamDecoder()
    while True:
        data = s.recv(4096)
        if not data:
            s.close()
            return "closed"
        for f in dec.feed(data):
            m = E.REGISTRY.decode(f)
            if m.name == "s_welcome":
                return s
            if m.name == "error":
                s.close()
                return m["detail"]


def alive(s):
    """Does the proxy still answer a ping on this session?"""
    try:
        s.sendall(framing.frame(E.REGISTRY.encode("ping", 7)))
        dec = framing.StreamDecoder()
        while True:
            data = s.recv(4096)
            if not data:
                return False
            for f in dec.feed(data):
                if E.REGISTRY.decode(f).name == "pong":
                    return True
    except OSError:
        return False


def test_one_address_cannot_hold_every_connection_and_status_gets_through(tmp_path):
    async def main():
        p = await started(config(tmp_path, max_connections=12, max_connections_per_host=8))
        loop = asyncio.get_running_loop()
        try:
            def attack():
                held = [plain_session(p, "127.0.0.1", b"idle-%02d" % i) for i in range(30)]
                assert all(not isinstance(s, str) for s in held[-8:])
                real = plain_session(p, "127.0.0.2", b"real-node")     # another address: room
                assert not isinstance(real, str), real
                more = [plain_session(p, "127.0.0.3", b"other-%d" % i) for i in range(6)]
                assert all(not isinstance(s, str) for s in more)
                return held, real, more

            held, real, more = await loop.run_in_executor(None, attack)
            assert len(p.links) <= 12 and len(p.host_links["127.0.0.1"]) <= 8
            st = await fetch(p)                               # the full proxy answers status
            assert st["faults"]["connections_per_host_evicted"] >= 22
            assert st["faults"]["connection_limit_evicted"] >= 1
            ok = await loop.run_in_executor(None, alive, real)
            assert ok, "the real node at its own address kept its session"
            for s in held + more + [real]:
                if not isinstance(s, str):
                    s.close()
        finally:
            await p.stop()
    run(main())


async def fetch(p):
    from upsycle.proxy.status import fetch_status
    return await fetch_status(*p.addresses["tcp"])


def test_idle_sessions_are_evicted_before_a_new_one_is_refused(tmp_path):
    async def main():
        p = await started(config(tmp_path, max_sessions_per_host=3, session_idle_s=0.3))
        loop = asyncio.get_running_loop()
        try:
            def scenario():
                busy = [plain_session(p, "127.0.0.1", b"busy-%d" % i) for i in range(3)]
                refused = plain_session(p, "127.0.0.1", b"newcomer-1")   # none idle yet
                time.sleep(0.5)
                fourth = plain_session(p, "127.0.0.1", b"newcomer-2")    # an idle one makes room
                return busy, refused, fourth

            busy, refused, fourth = await loop.run_in_executor(None, scenario)
            assert refused == "at most 3 sessions per address", refused
            assert not isinstance(fourth, str), fourth
            assert len(p.sessions) == 3 and p.status()["faults"]["idle_session_evicted"] == 1
            for s in busy + [fourth]:
                if not isinstance(s, str):
                    s.close()
        finally:
            await p.stop()
    run(main())


def test_per_address_limits_must_leave_room(tmp_path):
    from upsycle.proxy.config import ConfigError
    with pytest.raises(ConfigError) as e:
        Proxy(config(tmp_path, max_connections=100, max_connections_per_host=100))
    assert "leave room" in str(e.value)
    path = tmp_path / "p.toml"
    path.write_text("[limits]\nmax_sessions = 10\nmax_sessions_per_host = 10\n")
    with pytest.raises(ConfigError):
        Config.load(str(path))
