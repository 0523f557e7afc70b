"""Private groups end to end on the host: topic create -> invite -> join (CLI)
-> publish through a running proxy -> members read; removal by re-key
through the same proxy; the proxy's files hold no plaintext and no member
key."""
import asyncio
import hashlib
import os
import re
import subprocess
import sys

import pytest

from upsycle.client import Client
from upsycle.group_codec import EpochChanged, GroupCodec, Rejected
from upsycle.proxy.config import Config
from upsycle.proxy.server import Proxy
from upsycle.topic_store import TopicStore

SECRET = b"SECRET-SOIL-MOISTURE-31.7%"
SECRET2 = b"AFTER-BOB-LEFT-22.9C"


def node_key_of(name):
    """A fixed static key per test node name (the node id is bound to it)."""
    return hashlib.sha256(b"test-node-key:" + name).digest()


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    # Remembered proxy keys of this test's clients stay in the test's directory.
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host") + os.pathsep + ROOT)


def cli(capsys, *argv):
    # the CLI as a user runs it, in its own process
    p = subprocess.run([sys.executable, "-m", "upsycle"] + list(argv), env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_private_topic_through_a_running_proxy(tmp_path, capsys):
    admin_h, alice_h, bob_h = (str(tmp_path / n) for n in ("admin", "alice", "bob"))
    cli(capsys, "topic", "--home", admin_h, "create", "garden")
    url_rw = cli(capsys, "topic", "--home", admin_h, "invite", "garden", "--read", "--write", "--no-qr").strip()
    url_r = cli(capsys, "topic", "--home", admin_h, "invite", "garden", "--read", "--no-qr").strip()
    cli(capsys, "topic", "--home", alice_h, "join", url_rw)
    bob_key = re.search(r"member key ([0-9a-f]{64})", cli(capsys, "topic", "--home", bob_h, "join", url_r)).group(1)
    alice_key = TopicStore(alice_h).find("garden").identity.public

    cfg = Config()
    cfg.data = str(tmp_path / "proxy-data")
    cfg.tcp_port = 0
    cfg.udp_port = 0

    seen = {}

    async def main():
        p = Proxy(cfg)
        await p.start()
        host, port = p.addresses["tcp"]
        try:
            admin_c, alice_c, bob_c = (GroupCodec(TopicStore(h)) for h in (admin_h, alice_h, bob_h))
            tid = seen["tid"] = admin_c.topic_id("garden")
            async with Client(host, port, identity=node_key_of(b"admin"), codec=admin_c) as admin, \
                    Client(host, port, identity=node_key_of(b"alice"), codec=alice_c) as alice, \
                    Client(host, port, identity=node_key_of(b"bob"), codec=bob_c) as bob, \
                    Client(host, port, identity=node_key_of(b"admin-raw")) as raw:
                for c in (admin, alice, bob):
                    await c.subscribe(tid)
                await alice.publish(tid, SECRET)
                for c in (admin, alice, bob):
                    # alice's own publication comes back too: her replay window
                    # has not seen it (she does not record her own sends)
                    d = await c.next_delivery(timeout=10)
                    assert d.payload == SECRET, (c.node_id, d.payload)

                # removal: the admin's CLI makes the re-key; it travels the topic
                out = cli(capsys, "topic", "--home", admin_h, "remove", "garden", bob_key[:12])
                assert re.search(r": (\S+rekey-1\.cbor)", out)
                admin_c = GroupCodec(TopicStore(admin_h))     # reload the admin at epoch 1
                admin.codec = admin_c
                # the admin's client publishes the re-key from the topic's outbox
                admin.send_codec_messages()
                assert await admin.control_done(10)
                ev_alice = (await alice.next_delivery(timeout=10)).payload
                ev_bob = (await bob.next_delivery(timeout=10)).payload
                assert isinstance(ev_alice, EpochChanged) and ev_alice.epoch == 1
                assert isinstance(ev_bob, Rejected) and ev_bob.code == "group_removed"
                assert isinstance((await admin.next_delivery(timeout=10)).payload, Rejected)  # stale for the admin

                await alice.publish(tid, SECRET2)
                assert (await admin.next_delivery(timeout=10)).payload == SECRET2
                late = (await bob.next_delivery(timeout=10)).payload
                assert isinstance(late, Rejected) and late.code == "group_unknown_epoch"
        finally:
            await p.stop()

    asyncio.run(asyncio.wait_for(main(), 60))

    # the proxy's database (and its WAL) never saw plaintext or who published
    files = [os.path.join(d, f) for d, _, fs in os.walk(cfg.data) for f in fs]
    assert any(f.endswith(".sqlite3") for f in files), files
    blob = b"".join(open(f, "rb").read() for f in files)
    assert seen["tid"] in blob      # the proxy did store the topic's messages
    for needle in (SECRET, SECRET2, b"SECRET", alice_key, bytes.fromhex(bob_key), b"garden"):
        assert needle not in blob, needle


def test_deliveries_still_queued_when_a_reader_stops_come_again(tmp_path, capsys):
    """A reader that stops with deliveries received but not yet taken by
    the app (`upsycle sub` killed while the proxy's window was in flight)
    gets them again on its next run: its replay window on disk moved only
    for the messages the app took, so the proxy's redelivery is not refused
    as a replay."""
    admin_h, reader_h = str(tmp_path / "admin"), str(tmp_path / "reader")
    cli(capsys, "topic", "--home", admin_h, "create", "garden")
    url = cli(capsys, "topic", "--home", admin_h, "invite", "garden", "--read", "--no-qr").strip()
    cli(capsys, "topic", "--home", reader_h, "join", url)

    cfg = Config()
    cfg.data = str(tmp_path / "proxy-data")
    cfg.tcp_port = 0
    cfg.udp_port = 0
    bodies = [b"reading-%d" % i for i in range(10)]

    async def main():
        p = Proxy(cfg)
        await p.start()
        host, port = p.addresses["tcp"]
        try:
            admin_c = GroupCodec(TopicStore(admin_h))
            tid = admin_c.topic_id("garden")
            async with Client(host, port, identity=node_key_of(b"admin"), codec=admin_c) as admin:
                for b in bodies:
                    await admin.publish(tid, b)
            got = []
            async with Client(host, port, identity=node_key_of(b"reader"),
                              codec=GroupCodec(TopicStore(reader_h))) as reader:
                await reader.subscribe(tid)
                got.append((await reader.next_delivery(timeout=10)).payload)
                got.append((await reader.next_delivery(timeout=10)).payload)
                # the rest arrives while the app is busy, then it stops
                deadline = asyncio.get_running_loop().time() + 10
                while reader._inbox.qsize() < len(bodies) - 2:
                    assert asyncio.get_running_loop().time() < deadline, reader._inbox.qsize()
                    await asyncio.sleep(0.02)
            async with Client(host, port, identity=node_key_of(b"reader"),
                              codec=GroupCodec(TopicStore(reader_h))) as reader:
                await reader.subscribe(tid)
                while len(got) < len(bodies):
                    d = await reader.next_delivery(timeout=10)
                    assert isinstance(d.payload, bytes), d.payload
                    got.append(d.payload)
            assert got == bodies
        finally:
            await p.stop()

    asyncio.run(asyncio.wait_for(main(), 90))


def test_readings_that_overtook_their_introduction_reach_the_reader(tmp_path, capsys):
    """A board that publishes through two proxies can have its second
    reading reach a reader's proxy before the first, which carries its
    introduction (key and capability). The reader's client keeps it and
    hands it out right after the introduction opens, in arrival order."""
    admin_h, writer_h, reader_h = (str(tmp_path / n) for n in ("admin", "writer", "reader"))
    cli(capsys, "topic", "--home", admin_h, "create", "garden")
    url_rw = cli(capsys, "topic", "--home", admin_h, "invite", "garden", "--read", "--write", "--no-qr").strip()
    url_r = cli(capsys, "topic", "--home", admin_h, "invite", "garden", "--read", "--no-qr").strip()
    cli(capsys, "topic", "--home", writer_h, "join", url_rw)
    cli(capsys, "topic", "--home", reader_h, "join", url_r)
    cfg = Config()
    cfg.data = str(tmp_path / "proxy-data")
    cfg.tcp_port = 0
    cfg.udp_port = 0

    async def main():
        p = Proxy(cfg)
        await p.start()
        host, port = p.addresses["tcp"]
        try:
            writer_c = GroupCodec(TopicStore(writer_h))
            tid = writer_c.topic_id("garden")
            sealed = [writer_c.encode(tid, b"r%d" % i) for i in range(3)]   # the first carries the introduction
            async with Client(host, port, identity=node_key_of(b"raw")) as raw, \
                    Client(host, port, identity=node_key_of(b"reader"),
                           codec=GroupCodec(TopicStore(reader_h))) as reader:
                await reader.subscribe(tid)
                for i in (1, 2, 0):
                    await raw.publish(tid, sealed[i])
                got = [(await reader.next_delivery(timeout=10)).payload for _ in range(5)]
                assert [type(x).__name__ for x in got[:2]] == ["Held", "Held"], got
                assert got[2:] == [b"r0", b"r1", b"r2"], got
                # taken by the app: nothing is handed out again
                assert GroupCodec(TopicStore(reader_h)).ready(tid) == []
        finally:
            await p.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
