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
