"""The proxy in-process with the async client: routing, durability promises,
resume, idempotency, retention, limits and bad input."""
import asyncio
import hashlib
import os
import socket
import time

import pytest

from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W
from upsycle import topics
from upsycle.client import Client, PublishRejected
from upsycle.proxy import event_loop
from upsycle.proxy.config import Config, ConfigError, parse_hostport
from upsycle.proxy.server import Proxy
from upsycle.proxy.store import StorageError
from upsycle.proxy.status import fetch_status


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    # Node keys and remembered proxy keys of this test's clients.
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


def make_config(tmp_path, **limits):
    c = Config()
    c.data = str(tmp_path / "data")
    c.tcp_port = 0
    c.udp_port = 0
    # The clients below use secure links; the raw-socket tests of the
    # session layer itself speak plaintext, so it is allowed here.
    c.allow_plaintext = True
    for k, v in limits.items():
        if k.startswith("ret_"):
            setattr(c.retention, k[4:], v)
        else:
            c.limits[k] = v
    return c


def run(coro):
    # On the loop `upsycle proxy` runs on here (uvloop where installed:
    # upsycle/proxy/event_loop.py), so these tests cover that one.
    return event_loop.run(asyncio.wait_for(coro, 60), event_loop.choose()[0])


async def started(cfg):
    p = Proxy(cfg)
    await p.start()
    return p


def node_identity(node):
    """A fixed static key per test node name: the same name is the same node
    (its node id is bound to this key)."""
    return hashlib.sha256(b"test-node-key:" + node).digest()


def client(p, node, kind="tcp", **kw):
    host, port = p.addresses[kind]
    return Client(host, port, identity=node_identity(node), transport=kind, **kw)


async def drain(c, n, timeout=5.0):
    out = []
    for _ in range(n):
        out.append(await c.next_delivery(timeout=timeout))
    return out


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_publish_then_subscriber_gets_payloads_in_order(tmp_path, kind):
    async def main():
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"pub-1", kind) as pub, client(p, b"sub-1", kind) as sub:
                await sub.subscribe("greenhouse")
                payloads = [os.urandom(40) for _ in range(20)]   # opaque bytes
                for x in payloads:
                    await pub.publish("greenhouse", x)
                got = await drain(sub, 20)
                assert [d.payload for d in got] == payloads
                assert [d.seq for d in got] == list(range(1, 21))
                assert got[0].topic == topics.topic_id("greenhouse")
        finally:
            await p.stop()
    run(main())


def test_subscriber_resumes_from_its_cursor_after_reconnect(tmp_path):
    async def main():
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"pub") as pub:
                for i in range(5):
                    await pub.publish("t", b"m%d" % i)
            async with client(p, b"sub") as sub:
                await sub.subscribe("t")
                assert [d.payload for d in await drain(sub, 2)] == [b"m0", b"m1"]
            await asyncio.sleep(0.3)   # cursor rides the next transaction
            async with client(p, b"sub") as sub:
                await sub.subscribe("t")
                assert [d.payload for d in await drain(sub, 3)] == [b"m2", b"m3", b"m4"]
            await asyncio.sleep(0.1)   # the last ack reaches the proxy before it stops
        finally:
            await p.stop()
        # ...and across a proxy restart.
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"pub") as pub:
                await pub.publish("t", b"m5")
            async with client(p, b"sub") as sub:
                await sub.subscribe("t")
                assert [d.payload for d in await drain(sub, 1)] == [b"m5"]
        finally:
            await p.stop()
    run(main())


def test_a_session_cannot_publish_under_another_nodes_message_id(tmp_path):
    """Message ids are node id | sequence, so the next id of a node is easy to
    guess. Were the proxy to accept it from anyone, the node's own publish
    would later be taken for a retransmission and silently dropped."""
    async def main():
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"victim") as victim, client(p, b"squatter") as squatter, \
                    client(p, b"sub") as sub:
                await sub.subscribe("t")
                mid = W.message_id(victim.node_id, 7)
                with pytest.raises(PublishRejected) as e:
                    await squatter.publish("t", b"squatted", msg_id=mid)
                assert e.value.code == W.R_MSG_ID
                await victim.publish("t", b"mine", msg_id=mid)
                got = await drain(sub, 1)
                assert [d.payload for d in got] == [b"mine"]
            assert p.status()["faults"].get("msg_id_foreign") == 1
        finally:
            await p.stop()
    run(main())


def test_retransmitted_publish_is_stored_once_and_delivered_once(tmp_path):
    async def main():
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"pub") as pub, client(p, b"sub") as sub:
                await sub.subscribe("t")
                mid = W.message_id(pub.node_id, 7)
                await pub.publish("t", b"once", msg_id=mid)
                await pub.publish("t", b"once", msg_id=mid)     # acked again, not stored again
                await pub.publish("t", b"next")
                got = await drain(sub, 2)
                assert [d.payload for d in got] == [b"once", b"next"]
                with pytest.raises(asyncio.TimeoutError):
                    await sub.next_delivery(timeout=0.3)
            st = p.status()
            assert st["stored_messages"] == 2
        finally:
            await p.stop()
    run(main())


def test_retention_count_drops_oldest_and_tells_subscriber(tmp_path, caplog):
    async def main():
        p = await started(make_config(tmp_path, ret_max_count=5))
        try:
            async with client(p, b"pub") as pub:
                await pub.publish("t", b"first")
            async with client(p, b"sub") as sub:
                await sub.subscribe("t")
                await drain(sub, 1)
            await asyncio.sleep(0.3)
            async with client(p, b"pub") as pub:
                for i in range(12):
                    await pub.publish("t", b"m%d" % i)
            async with client(p, b"sub") as sub:
                await sub.subscribe("t")
                got = await drain(sub, 6)
                assert got[0].missed == 7 and got[0].cause == "retention_count"
                assert [d.payload for d in got[1:]] == [b"m7", b"m8", b"m9", b"m10", b"m11"]
            st = p.status()
            assert st["drops"]["retention_count"] == 8
            assert st["stored_messages"] == 5
        finally:
            await p.stop()
    run(main())
    faults = [r.getMessage() for r in caplog.records if "cause=missed_retention_count" in r.getMessage()]
    assert len(faults) == 1   # logged once per cause


def test_retention_bytes_and_age(tmp_path):
    async def main():
        p = await started(make_config(tmp_path, ret_max_bytes=1000))
        try:
            async with client(p, b"pub") as pub:
                for i in range(10):
                    await pub.publish("t", bytes([i]) * 300)
            assert p.store.topics[topics.topic_id("t")].bytes <= 1000
            assert p.status()["drops"]["retention_bytes"] == 7
        finally:
            await p.stop()
        # Age: everything older than the limit goes on the next sweep.
        cfg = make_config(tmp_path, ret_max_age_s=1)
        p = await started(cfg)
        try:
            p.store.clock = lambda: 1e12
            with p.store._cv:
                p.store._cv.notify()
            for _ in range(200):
                await asyncio.sleep(0.05)
                if p.status()["stored_messages"] == 0 and p.store.drops.get("retention_age"):
                    break
            assert p.status()["stored_messages"] == 0
            assert p.store.drops["retention_age"] == 3
        finally:
            await p.stop()
    import upsycle.proxy.store as store_mod
    old = store_mod.AGE_SWEEP_S
    store_mod.AGE_SWEEP_S = 0.05
    try:
        run(main())
    finally:
        store_mod.AGE_SWEEP_S = old


def test_subscriber_queue_limit_skips_oldest(tmp_path):
    async def main():
        p = await started(make_config(tmp_path, subscriber_queue=3))
        try:
            async with client(p, b"pub") as pub:
                for i in range(10):
                    await pub.publish("t", b"m%d" % i)
            async with client(p, b"sub") as sub:
                await sub.subscribe("t")
                got = await drain(sub, 4)
                assert got[0].missed == 7 and got[0].cause == W.MISSED_QUEUE
                assert [d.payload for d in got[1:]] == [b"m7", b"m8", b"m9"]
            assert p.status()["drops"][W.MISSED_QUEUE] == 7
        finally:
            await p.stop()
    run(main())


def test_status_reports_sessions_topics_queues(tmp_path):
    async def main():
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"sub") as sub:
                await sub.subscribe("a")
            async with client(p, b"pub") as pub:
                await pub.publish("a", b"12345")
                await pub.publish("b", b"678")
                st = await fetch_status(*p.addresses["tcp"])
                assert st["sessions"] == 1
                assert st["topics"] == 2
                assert st["stored_messages"] == 2 and st["stored_bytes"] == 8
                assert st["queued_messages"] == 1     # "sub" is offline with one waiting
                assert st["subscriptions"] == 1
                # the loop these tests run on is the proxy's own choice
                assert st["event_loop"] == event_loop.choose()[1]
        finally:
            await p.stop()
    run(main())


def test_codec_hook_transforms_payloads(tmp_path):
    class Xor:
        def encode(self, topic, data):
            return bytes(b ^ topic[0] for b in data) + b"!"

        def decode(self, topic, payload):
            assert payload.endswith(b"!")
            return bytes(b ^ topic[0] for b in payload[:-1])

    async def main():
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"pub", codec=Xor()) as pub, client(p, b"sub", codec=Xor()) as sub, \
                    client(p, b"spy") as spy:
                await sub.subscribe("secret")
                await spy.subscribe("secret")
                await pub.publish("secret", b"plain text")
                assert (await sub.next_delivery(timeout=5)).payload == b"plain text"
                assert (await spy.next_delivery(timeout=5)).payload != b"plain text"
        finally:
            await p.stop()
    run(main())


def test_readonly_data_dir_fails_at_start_with_clear_error(tmp_path):
    cfg = make_config(tmp_path)
    os.makedirs(cfg.data)
    os.chmod(cfg.data, 0o555)
    try:
        if os.access(cfg.data, os.W_OK):
            # Running as root: permissions do not bind; use a path under a file.
            open(str(tmp_path / "f"), "w").close()
            cfg.data = str(tmp_path / "f" / "data")
        with pytest.raises(StorageError) as ei:
            run(started(cfg))
        assert ei.value.code in (W.R_STORAGE_READONLY, W.R_STORAGE)
        assert cfg.data in ei.value.message
    finally:
        os.chmod(str(tmp_path / "data"), 0o755)


def test_full_storage_refuses_publishes_with_typed_error_and_keeps_accepted(tmp_path):
    async def main():
        p = await started(make_config(tmp_path, max_db_bytes=96 * 1024, ret_max_count=0, ret_max_bytes=0))
        acked, rejected = [], []
        try:
            async with client(p, b"pub") as pub:
                for i in range(400):
                    try:
                        await pub.publish("t", (b"%04d" % i) * 128)
                        acked.append(i)
                    except PublishRejected as e:
                        rejected.append(e.code)
                        if len(rejected) > 3:
                            break
            assert acked and rejected
            assert set(rejected) == {W.R_STORAGE_FULL}
            assert p.status()["rejects"][W.R_STORAGE_FULL] >= 1
        finally:
            await p.stop()
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"sub") as sub:
                await sub.subscribe("t")
                got = await drain(sub, len(acked))
                assert [int(d.payload[:4]) for d in got] == acked
        finally:
            await p.stop()
    run(main())


def raw_tcp(p):
    s = socket.create_connection(p.addresses["tcp"], 2)
    s.settimeout(2)
    return s


def read_frames(s, n=1):
    dec = framing.StreamDecoder()
    out = []
    while len(out) < n:
        data = s.recv(65536)
        if not data:
            break
        out.extend(E.REGISTRY.decode(f) for f in dec.feed(data))
    return out


def test_bad_tcp_input_typed_replies_and_others_unaffected(tmp_path, caplog):
    async def main():
        p = await started(make_config(tmp_path))
        loop = asyncio.get_running_loop()
        try:
            async with client(p, b"good-pub") as pub, client(p, b"good-sub") as sub:
                await sub.subscribe("t")

                def hostile():
                    results = []
                    hello = framing.frame(E.REGISTRY.encode("s_hello", b"bad", 1000, 4))
                    cases = [
                        framing.frame(b"\xff\xfe"),                          # not CBOR
                        framing.frame(b"\x83\x07\x18\x30\x41x"),             # version 7
                        framing.frame(b"\x82\x01\x18\xc8"),                  # unknown type
                        framing.frame(E.REGISTRY.encode("s_deliver", b"t", 1, b"i", b"p")),  # wrong direction
                    ]
                    s = raw_tcp(p)
                    s.sendall(hello)
                    assert read_frames(s)[0].name == "s_welcome"
                    for c in cases:
                        s.sendall(c)
                        m = read_frames(s)[0]
                        results.append((m.name, m["code"]))
                    s.close()
                    # A declared length over the limit: typed error, then closed.
                    s = raw_tcp(p)
                    s.sendall(b"\xff\xff" + b"x" * 10)
                    m = read_frames(s)
                    results.append((m[0].name, m[0]["code"]))
                    assert s.recv(10) == b""
                    s.close()
                    return results

                res = await loop.run_in_executor(None, hostile)
                assert res[0] == ("error", "decode:utf8") or res[0][1].startswith("decode")
                assert res[1] == ("error", "decode:version")
                assert res[2] == ("error", "decode:unknown_type")
                assert res[3] == ("error", "unexpected")
                assert res[4] == ("error", "frame_oversize")
                await pub.publish("t", b"still fine")
                assert (await sub.next_delivery(timeout=5)).payload == b"still fine"
            f = p.status()["faults"]
            assert f["frame_oversize"] == 1 and f["unexpected"] == 1
        finally:
            await p.stop()
    run(main())


def test_peer_that_never_reads_is_cut_off(tmp_path):
    async def main():
        p = await started(make_config(tmp_path))
        loop = asyncio.get_running_loop()
        try:
            async with client(p, b"pub") as pub:
                for i in range(300):
                    await pub.publish_nowait("big", os.urandom(1000))
                await pub.publish("big", b"last")

            def stubborn():
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                # Small kernel buffers on our side: otherwise a few MB of
                # requests vanish into socket buffers before the proxy reads.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                s.settimeout(20)
                s.connect(p.addresses["tcp"])
                s.sendall(framing.frame(E.REGISTRY.encode("s_hello", b"lazy", 60000, 256)))
                s.sendall(framing.frame(E.REGISTRY.encode("s_subscribe", topics.topic_id("big"))))
                # Then only requests, never a read: the proxy must give up on us.
                req = framing.frame(E.REGISTRY.encode("s_status_req"))
                end = time.monotonic() + 20
                try:
                    while time.monotonic() < end:
                        s.sendall(req * 50)
                except OSError:
                    return "closed"
                finally:
                    s.close()
                return "still open"

            assert await loop.run_in_executor(None, stubborn) == "closed"
            assert p.status()["faults"]["slow_reader"] == 1
            async with client(p, b"sub") as sub:
                await sub.subscribe("big")
                assert len(await drain(sub, 10)) == 10
        finally:
            await p.stop()
    run(main())


def test_publish_window_overrun_gets_typed_rejects(tmp_path):
    async def main():
        p = await started(make_config(tmp_path))
        loop = asyncio.get_running_loop()
        try:
            def flood():
                s = raw_tcp(p)
                s.sendall(framing.frame(E.REGISTRY.encode("s_hello", b"greedy", 60000, 4)))
                batch = b"".join(framing.frame(E.REGISTRY.encode("s_publish", b"t" * 16, W.message_id(b"greedy", i), b"x"))
                                 for i in range(600))
                s.sendall(batch)
                names = {}
                for m in read_frames(s, 601):
                    key = m.name if m.name != "s_reject" else "reject:" + m["code"]
                    names[key] = names.get(key, 0) + 1
                s.close()
                return names

            names = await loop.run_in_executor(None, flood)
            assert names.get("reject:limit", 0) > 0, names
            assert names["s_puback"] + names["reject:limit"] == 600
        finally:
            await p.stop()
    run(main())


def test_config_file_and_errors(tmp_path):
    f = tmp_path / "proxy.toml"
    f.write_text('data = "/srv/x"\nlisten = "0.0.0.0"\ntcp_port = 9000\n[retention]\nmax_count = 7\n'
                 '[limits]\nsubscriber_queue = 9\n')
    c = Config.load(str(f))
    assert (c.data, c.listen, c.tcp_port, c.retention.max_count, c.limits["subscriber_queue"]) == \
        ("/srv/x", "0.0.0.0", 9000, 7, 9)
    f.write_text("[limits]\nnope = 1\n")
    with pytest.raises(ConfigError):
        Config.load(str(f))
    f.write_text("tcp_port = 'x'\n")
    with pytest.raises(ConfigError):
        Config.load(str(f))
    assert parse_hostport("[::1]:5") == ("::1", 5)
    assert parse_hostport(":6") == ("127.0.0.1", 6)
    assert topics.resolve("00" * 16) == b"\x00" * 16
    assert topics.resolve("name:" + "00" * 16) == topics.topic_id("00" * 16)


def test_udp_flood_from_one_address_is_rate_limited_and_others_served(tmp_path):
    async def main():
        p = await started(make_config(tmp_path, udp_rate=200, udp_burst=50))
        loop = asyncio.get_running_loop()
        try:
            def flood():
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                ping = E.REGISTRY.encode("ping", 1)
                for _ in range(1000):
                    u.sendto(ping, p.addresses["udp"])
                u.close()

            await loop.run_in_executor(None, flood)
            async with client(p, b"u-pub", "udp") as pub, client(p, b"u-sub", "udp") as sub:
                await sub.subscribe("t")
                await pub.publish("t", b"through")
                assert (await sub.next_delivery(timeout=5)).payload == b"through"
            f = p.status()["faults"]
            # Some datagrams die in the kernel's socket buffer; of those that
            # reach us, all but the burst and the refill are dropped unread.
            assert f["udp_flood"] > 0
            assert f["udp_no_session"] <= 100
        finally:
            await p.stop()
    run(main())


def test_sessions_per_host_capped(tmp_path):
    async def main():
        p = await started(make_config(tmp_path, max_sessions_per_host=2))
        try:
            async with client(p, b"a") as a, client(p, b"b") as b:
                c = client(p, b"c", reconnect=False)
                with pytest.raises(ConnectionError):
                    await c.connect(timeout=1)
                await c.close()
                assert ("limit", "at most 2 sessions per address") in c.errors
                await a.publish("t", b"a still works")
            assert p.status()["faults"]["sessions_per_host"] >= 1
        finally:
            await p.stop()
    run(main())


def test_unsubscribe_stops_deliveries_and_forgets_cursor(tmp_path):
    async def main():
        p = await started(make_config(tmp_path))
        try:
            async with client(p, b"pub") as pub, client(p, b"sub") as sub:
                await sub.subscribe("t")
                await pub.publish("t", b"1")
                await sub.next_delivery(timeout=5)
                await sub.unsubscribe("t")
                for _ in range(50):
                    await asyncio.sleep(0.02)
                    if not p.store.subs:
                        break
                assert p.store.subs == {}
                await pub.publish("t", b"2")
                with pytest.raises(asyncio.TimeoutError):
                    await sub.next_delivery(timeout=0.3)
        finally:
            await p.stop()
    run(main())


def test_subscription_limits(tmp_path):
    async def main():
        p = await started(make_config(tmp_path, max_subscriptions=2, max_total_subscriptions=3))
        try:
            async with client(p, b"a") as a, client(p, b"b") as b:
                await a.subscribe("t1")
                await a.subscribe("t2")
                with pytest.raises(asyncio.TimeoutError):
                    await a.subscribe("t3", timeout=0.5)
                assert ("limit", "at most 2 subscriptions per session") in a.errors
                await b.subscribe("t1")
                with pytest.raises(asyncio.TimeoutError):
                    await b.subscribe("t2", timeout=0.5)
                assert ("limit", "the proxy keeps 3 subscriptions at most") in b.errors
            f = p.status()["faults"]
            assert f["subscription_limit"] == 1 and f["total_subscription_limit"] == 1
        finally:
            await p.stop()
    run(main())
