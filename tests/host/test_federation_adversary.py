"""Federated proxies under a hostile proxy (docs/federation.md, "Bad
input"): garbage, forged overlay messages, a proxy claiming another's key,
one advertising every topic and never acknowledging, a refused stranger.
Each is bounded and counted, and the honest proxies keep carrying the topic."""
import asyncio
import os
import socket
import time

import pytest

from federation_rig import FakePeer, Federation, host_of
from shared_protocol.overlay import ids, profile
from upsycle import topics
from upsycle.client import Client
from upsycle.proxy import peers as peers_mod

TOPIC = "fed/adversary"
A, B = 0, 1


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


async def until(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await cond():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


async def publish_and_receive(fed, tmp, n, label):
    """n messages published at A all reach B's subscriber; returns them."""
    sub = Client(host_of(B), fed.ports[B], home=str(tmp / "sub"))
    await sub.connect()
    await sub.subscribe(TOPIC)
    pub = Client(host_of(A), fed.ports[A], home=str(tmp / "pub"))
    await pub.connect()
    try:
        acked = [await pub.publish(TOPIC, b"%s %d" % (label, k)) for k in range(n)]
        got = []
        end = time.monotonic() + 30
        while not set(acked) <= set(got) and time.monotonic() < end:
            try:
                d = await sub.next_delivery(timeout=0.5)
            except asyncio.TimeoutError:
                continue
            got.append(bytes(d.msg_id))
        assert set(acked) <= set(got), "%s: B's subscriber got %d of %d" % (label, len(set(got) & set(acked)),
                                                                           len(acked))
        return acked
    finally:
        await pub.close()
        await sub.close()


async def subscribed(fed, tmp):
    """B follows the topic (durably) and A has published once: both carry it."""
    sub = Client(host_of(B), fed.ports[B], home=str(tmp / "sub"))
    await sub.connect()
    await sub.subscribe(TOPIC)
    await sub.close()
    pub = Client(host_of(A), fed.ports[A], home=str(tmp / "pub"))
    await pub.connect()
    await pub.publish(TOPIC, b"first")
    await pub.close()
    tid = topics.resolve(TOPIC)

    async def ring():
        st = await fed.status(A)
        r = st["federation"]["rings"].get(tid.hex())
        return bool(r and r[0])
    await until(ring, 20, "A's ring for the topic")


def test_garbage_and_forged_overlay_messages_are_counted_and_change_nothing(tmp_path):
    fed = Federation(tmp_path, 2, seeds=(0,))
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            await subscribed(fed, tmp_path)
            # Garbage on the port: not a handshake, not a session.
            for junk in (os.urandom(200), b"\x00\x05hello", b"\xff" * 3000):
                s = socket.create_connection((host_of(A), fed.ports[A]))
                s.sendall(junk)
                s.close()
            f = FakePeer(b"forger")
            assert await f.connect("127.0.0.1", fed.relays[A].port) is None
            b_id = ids.proxy_id(bytes.fromhex((await fed.status(B))["proxy_key"]))
            filt = bytes(32)
            # Rings and CYCLON messages that speak for B.
            f.send("rings_req", 1, b_id, b"127.0.0.1:9", filt, [[ids.topic_id(tid), []]])
            f.send("overlay_shuffle", 2, [[b_id, b"127.0.0.1:9", 0]], [None])
            # Garbled frames inside the link, a summary that makes no sense,
            # data of a topic A does not carry, PolderCast's own data type.
            f.send_raw(b"\x83\x01\x18\x72garbage")
            f.send("fed_summary", tid, [[b"short", 0, [[5, 3]]]], 1)
            other = topics.resolve("fed/nobody-here")
            f.send("fed_data", other, f.id + b"\x00" * 8, f.id, 1, 0, 0, b"unwanted")
            f.send("overlay_data", ids.topic_id(tid), b"m1", f.id, 0, b"x")
            await asyncio.sleep(1.0)
            st = await fed.status(A)
            await publish_and_receive(fed, tmp_path, 20, b"after-forgery")
            return f, st, b_id
        finally:
            fed.close_relays()

    try:
        f, st, b_id = asyncio.run(main())
    finally:
        fed.close()
    faults = st["faults"]
    assert faults.get("peer_id_forged", 0) >= 2, faults
    assert faults.get("fed_not_subscribed", 0) == 1, faults
    assert any(k.startswith("fed_summary") for k in faults), faults
    assert faults.get("peer_unexpected", 0) >= 1, faults     # overlay_data is not taken between proxies
    assert st["federation"]["topics_carried"] == 1
    assert [m["code"] for m in f.of("fed_ack")] == ["not_subscribed"]
    assert fed.rows(A, topics.resolve("fed/nobody-here")) == []
    # B is still A's ring neighbour: the forged rings message did not move it.
    assert b_id.hex() in sum(st["federation"]["rings"][tid.hex()], [])
    # Each cause is logged once.
    log = fed.log(A)
    assert log.count("cause=peer_id_forged") == 1


def test_a_proxy_claiming_another_proxys_key_is_refused(tmp_path):
    fed = Federation(tmp_path, 2, seeds=(0,))

    async def main():
        await fed.start()
        try:
            async def linked():
                return (await fed.status(A))["federation"]["peer_links"] == 1
            await until(linked, 20, "A and B to link")
            b_key = bytes.fromhex((await fed.status(B))["proxy_key"])
            f = FakePeer(b"impostor", hello_key=b_key)
            cause = await f.connect("127.0.0.1", fed.relays[A].port)
            st = await fed.status(A)
            return cause, st
        finally:
            fed.close_relays()

    try:
        cause, st = asyncio.run(main())
    finally:
        fed.close()
    assert cause == "peer_refused"
    assert st["faults"].get("peer_key_forged") == 1
    assert st["federation"]["peer_links"] == 1     # B only


def test_listed_policy_refuses_a_stranger_and_takes_a_listed_key(tmp_path):
    known = FakePeer(b"friend")
    fed = Federation(tmp_path, 1, seeds=(0,), policy="listed",
                     extra=["--peer", "127.0.0.1:9@" + known.public_key.hex()])

    async def main():
        await fed.start()
        try:
            stranger = FakePeer(b"stranger")
            c1 = await stranger.connect(host_of(0), fed.ports[0])
            c2 = await known.connect(host_of(0), fed.ports[0])
            st = await fed.status(0)
            return c1, c2, st
        finally:
            fed.close_relays()

    try:
        c1, c2, st = asyncio.run(main())
    finally:
        fed.close()
    assert c1 == "peer_refused" and c2 is None
    assert st["faults"].get("peer_not_listed") == 1
    assert st["federation"]["peer_links"] == 1


def test_a_peer_advertising_every_topic_and_never_acknowledging_is_bounded(tmp_path):
    fed = Federation(tmp_path, 2, seeds=(0,))
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            await subscribed(fed, tmp_path)
            f = FakePeer(b"sink")
            assert await f.connect("127.0.0.1", fed.relays[A].port) is None
            everything = (1 << profile.DEFAULT_BITS) - 1
            many = [[ids.topic_id(b"t%d" % k), []] for k in range(15)] + [[ids.topic_id(tid), []]]

            async def claim():
                # Every bit of the filter set and 16 topics named, ours among
                # them: A confirms it for the one topic A carries, nothing more.
                while True:
                    f.send("rings_req", int(time.time()) & 0xFFFF, f.id, f.addr,
                           everything.to_bytes(32, "big"), many)
                    await asyncio.sleep(0.3)
            claimer = asyncio.ensure_future(claim())

            async def in_ring():
                st = await fed.status(A)
                return f.id.hex() in sum(st["federation"]["rings"].get(tid.hex(), [[], []]), [])
            await until(in_ring, 20, "the sink in A's ring")
            acked = await publish_and_receive(fed, tmp_path, 40, b"with-a-sink")
            await asyncio.sleep(2.5)
            st = await fed.status(A)
            claimer.cancel()
            return f, st, acked
        finally:
            fed.close_relays()

    try:
        f, st, acked = asyncio.run(main())
    finally:
        fed.close()
    row = [p for p in st["federation"]["peers"] if p["id"] == f.id.hex()][0]
    # Everything A sent the sink waits for its acknowledgement (bounded by
    # the outbox limits), resent on timeout; B got everything regardless.
    assert 0 < row["queued"] <= peers_mod.PEER_QUEUE_MAX
    assert row["in_flight"] <= peers_mod.PEER_WINDOW_MAX
    assert row["retransmits"] > 0
    assert len(f.of("fed_data")) >= row["queued"]
    assert st["federation"]["topics_carried"] == 1   # the 15 advertised topics are not A's


def test_a_peer_flooding_gossip_is_cut_to_its_rate_and_others_carry_on(tmp_path):
    from upsycle.proxy import peer_table as federation
    fed = Federation(tmp_path, 2, seeds=(0,))
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            await subscribed(fed, tmp_path)
            f = FakePeer(b"flooder")
            assert await f.connect("127.0.0.1", fed.relays[A].port) is None
            n = 2000
            for k in range(n):
                # its own id in every shuffle: what URPS and the rate limit are for
                f.send("overlay_shuffle", k, [[f.id, f.addr, 0]], [None])
                if k % 200 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(1.0)
            st = await fed.status(A)
            await publish_and_receive(fed, tmp_path, 20, b"after-flood")
            return f, st, n
        finally:
            fed.close_relays()

    try:
        f, st, n = asyncio.run(main())
    finally:
        fed.close()
    flood = st["faults"].get("peer_gossip_flood", 0)
    # At most the burst plus a second's worth got through; the rest dropped.
    assert flood >= n - federation.GOSSIP_BURST - 3 * federation.GOSSIP_RATE, flood
    assert len(f.of("overlay_shuffle_reply")) <= federation.GOSSIP_BURST + 3 * federation.GOSSIP_RATE
    assert st["federation"]["cyclon_view"] <= 20
    assert fed.log(A).count("cause=peer_gossip_flood") == 1


def test_a_peer_cannot_number_messages_as_another_proxys_own(tmp_path):
    fed = Federation(tmp_path, 2, seeds=(0,))
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            await subscribed(fed, tmp_path)
            a_id = ids.proxy_id(bytes.fromhex((await fed.status(A))["proxy_key"]))
            f = FakePeer(b"numberer")
            assert await f.connect("127.0.0.1", fed.relays[A].port) is None
            f.send("fed_data", tid, f.id + b"\x00" * 8, a_id, 1000, 0, 0, b"forged as A's own")
            await asyncio.sleep(1.0)
            return f, await fed.status(A)
        finally:
            fed.close_relays()

    try:
        f, st = asyncio.run(main())
    finally:
        fed.close()
    assert st["faults"].get("fed_forged_origin") == 1
    assert [m["code"] for m in f.of("fed_ack")] == ["bad_origin"]
    assert all(not m.startswith(f.id) for _s, m in fed.rows(A, tid))
