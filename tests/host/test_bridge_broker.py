"""The bridge's MQTT side (upsycle.bridge.broker) against a real Mosquitto
restarted under a steady stream of publishes: nothing lost, and no publish
ahead of one made before it."""
import asyncio
import time

from mqtt_rig import Mosquitto, Watcher

from upsycle.bridge.broker import Broker

TOPIC = "order/x"


async def _stream_across_a_restart(broker, mosq, before=20, after=200, gap=0.001, burst=8):
    futs = [broker.publish(TOPIC, b"%d" % i, retain=False) for i in range(before)]
    await asyncio.wait_for(asyncio.gather(*futs), 10)
    mosq.stop()
    loop = asyncio.get_running_loop()
    # Started again while publishes keep coming every millisecond: some are
    # made while paho reconnects (its socket open, the CONNACK not yet read).
    loop.call_later(1.5, mosq.start)
    i = before
    end = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for _ in range(burst):
            futs.append(broker.publish(TOPIC, b"%d" % i, retain=False))
            i += 1
        if end is None and broker.connects >= 2:
            end = i + after
        if end is not None and i >= end:
            break
        await asyncio.sleep(gap)
    assert broker.connects >= 2, "the broker never came back"
    await asyncio.wait_for(asyncio.gather(*futs), 60)
    return i


def test_publishes_keep_their_order_across_a_broker_restart(tmp_path):
    mosq = Mosquitto(tmp_path)
    w = Watcher(mosq.port, (TOPIC,), client_id="order-watcher", clean=False)
    try:
        async def main():
            b = Broker("127.0.0.1", mosq.port, "order-bridge", "order/status")
            await b.start(timeout=10)
            try:
                return await _stream_across_a_restart(b, mosq)
            finally:
                b.close()
        n = asyncio.run(main())
        w.wait_for(lambda: len({p for _, p, _ in w.topics(TOPIC)}) >= n, timeout=60, what="%d publishes" % n)
        firsts, seen = [], set()
        for _, p, _ in w.topics(TOPIC):
            if p not in seen:     # QoS 1: one in flight at the stop may come twice
                seen.add(p)
                firsts.append(int(p))
        assert firsts == list(range(n)), [x for k, x in enumerate(firsts) if x != k][:10]
    finally:
        w.close()
        mosq.stop()
