"""A node with several proxies (upsycle.multi_client): the publisher's proxy
dies mid-stream, publisher and subscriber move to the other proxy, nothing
acknowledged is lost and the subscriber sees nothing twice."""
import asyncio
import time

import pytest

from federation_rig import Federation, host_of
from upsycle import topics
from upsycle.multi_client import MultiClient

TOPIC = "fed/multi"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("mode", ["failover", "all"])
def test_a_node_fails_over_between_federated_proxies_without_loss_or_duplicates(tmp_path, mode):
    fed = Federation(tmp_path, 2, seeds=(0,))
    tid = topics.resolve(TOPIC)

    async def main():
        await fed.start()
        try:
            both = [(host_of(0), fed.ports[0]), (host_of(1), fed.ports[1])]
            sub = MultiClient(both, mode=mode, failover_s=1.0, home=str(tmp_path / "sub"))
            await sub.connect()
            await sub.subscribe(TOPIC)
            pub = MultiClient(both, mode=mode, failover_s=1.0, home=str(tmp_path / "pub"))
            await pub.connect()
            got = []

            async def read():
                while True:
                    d = await sub.next_delivery()
                    got.append(bytes(d.msg_id))
            reader = asyncio.ensure_future(read())
            acked = []
            for k in range(150):
                if k == 50:
                    fed.sigkill(0)            # the proxy both nodes use first
                if k == 100:
                    await fed.start_proxy(0)  # back: what it held goes out by catch-up
                acked.append(await pub.publish(TOPIC, b"m%d" % k))
                await asyncio.sleep(0.01)
            end = time.monotonic() + 60
            while not set(acked) <= set(got) and time.monotonic() < end:
                await asyncio.sleep(0.2)
            reader.cancel()
            stats = (pub.switches, sub.switches, sub.duplicates)
            await pub.close()
            await sub.close()
            return acked, got, stats
        finally:
            fed.close_relays()

    try:
        acked, got, stats = asyncio.run(main())
    finally:
        fed.close()
    assert len(set(acked)) == 150
    assert set(acked) <= set(got), "lost %d" % len(set(acked) - set(got))
    assert len(got) == len(set(got)), "the node's output has duplicates"
    if mode == "failover":
        assert stats[0] >= 1 and stats[1] >= 1   # both moved to the other proxy
    # Each proxy stores each message once whichever way it came.
    for i in (0, 1):
        ids = [m for _s, m in fed.rows(i, tid)]
        assert len(ids) == len(set(ids))
