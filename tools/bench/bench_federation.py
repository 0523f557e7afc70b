"""Benchmark: site A -> site B through three federated proxies, against
Mosquitto 2 brokers chained by its built-in bridge.

    PYTHONPATH=host:. .venv/bin/python tools/bench/bench_federation.py [--messages N] [--idle-s S]

Both systems, side by side in one run, on loopback:

- upsycle: proxies A, M ("home") and B, each listing only its neighbours
  in the chain (peer_policy "listed": A - M - B), Noise links everywhere, a
  subscriber behind M (so M carries the topic) and the measured one behind
  B, the publisher behind A. Acknowledgements after fsync at A, and at
  every hop before the previous one lets go (docs/federation.md). Gossip
  every 1 s and catch-up every 2 s here (defaults 5 s and 10 s).
- Mosquitto (anchor): brokers A, M, B with persistence on; M bridges to A
  and B bridges to M (``connection`` in mosquitto.conf, ``topic bench/#
  both 1``: QoS 1, ``cleansession false``, ``restart_timeout 1``). Mosquitto
  acknowledges QoS 1 from memory and writes its persistence file at
  autosave (default 1800 s) or shutdown.

Rows: throughput (N messages flat out, window 128, until all reached B);
p50/p99 latency A -> B at a fixed rate (half the slower throughput, capped
at 500/s); messages lost when M is SIGKILLed under load (200 msg/s for 8 s,
M killed at 2 s and restarted at 4 s; lost = acknowledged to the publisher
and never received at B within 30 s). Client CPU is this process's (both
systems' clients run here: paho threads, asyncio clients), broker CPU the
three servers' from /proc. Then the bytes of overlay maintenance per
proxy per minute with the default periods, idle (a subscriber at each,
nothing published), from the proxies' own link counters.
"""
import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from brokers import ROOT, need, proc_cpu  # noqa: E402
from table import render  # noqa: E402

from upsycle.processes import free_port, kill, stop, wait_port  # noqa: E402

WINDOW = 128
TOPIC = "bench/fed"
KILL_RATE = 200
KILL_RUN_S = 8.0
KILL_AT_S = 2.0
RESTART_AT_S = 4.0
SETTLE_S = 30.0


def self_cpu():
    t = os.times()
    return t.user + t.system


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")


# -- Mosquitto chain ---------------------------------------------------------

class Chain:
    """Three servers in a row (self.procs, started by the subclass's
    start(i)): what both systems' chains do alike."""

    def kill_middle(self):
        kill(self.procs[1])

    def restart_middle(self):
        self.start(1)

    def cpu(self):
        return sum(proc_cpu(p.pid) for p in self.procs if p is not None and p.poll() is None)

    def close(self):
        for p in self.procs:
            if p is not None:
                stop(p)


class MosquittoChain(Chain):
    name = "mosquitto bridge"

    def __init__(self, tmp):
        self.tmp = tmp
        self.ports = [free_port() for _ in range(3)]
        self.procs = [None] * 3
        for i in range(3):
            self.start(i)

    def conf(self, i):
        d = os.path.join(self.tmp, "mq%d" % i)
        os.makedirs(d, exist_ok=True)
        c = ("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n"
             "max_inflight_messages %d\nmax_queued_messages 1000000\nlog_dest none\n" % (self.ports[i], d, WINDOW))
        if i > 0:
            c += ("connection hop%d\naddress 127.0.0.1:%d\ntopic bench/# both 1\ncleansession false\n"
                  "restart_timeout 1\nbridge_protocol_version mqttv311\n" % (i, self.ports[i - 1]))
        path = os.path.join(d, "mosquitto.conf")
        with open(path, "w") as f:
            f.write(c)
        return path

    def start(self, i):
        self.procs[i] = subprocess.Popen([need("mosquitto", "mosquitto"), "-c", self.conf(i)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.ports[i])


    def run(self, n, rate, on_tick=None):
        """Publish n messages at A (rate per second, 0: flat out); returns
        (acked ids, {id: latency s}, seconds until the last arrived)."""
        import paho.mqtt.client as mqtt
        recv = {}
        sent = {}
        ready = threading.Event()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fed-sub-%d" % os.getpid())
        sub.on_connect = lambda cl, u, f, rc, p: cl.subscribe(TOPIC, qos=1)
        sub.on_subscribe = lambda *a: ready.set()

        def on_message(c, u, m):
            i = int(m.payload[:12])
            if i not in recv:
                recv[i] = time.perf_counter()
        sub.on_message = on_message
        sub.connect("127.0.0.1", self.ports[2])
        sub.loop_start()
        ready.wait(10)
        time.sleep(1.0)   # the bridges subscribe upstream
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fed-pub-%d" % os.getpid())
        pub.max_inflight_messages_set(WINDOW)
        sem = threading.Semaphore(WINDOW)
        acked = set()
        mids = {}

        def on_publish(c, u, mid, rc, props):
            acked.add(mids.get(mid))
            sem.release()
        pub.on_publish = on_publish
        pub.connect("127.0.0.1", self.ports[0])
        pub.loop_start()
        t0 = time.perf_counter()
        for i in range(n):
            if rate:
                wait = t0 + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            if on_tick:
                on_tick(time.perf_counter() - t0)
            sem.acquire()
            sent[i] = time.perf_counter()
            info = pub.publish(TOPIC, b"%012d" % i + b"x" * 52, qos=1)
            mids[info.mid] = i
        end = time.perf_counter() + SETTLE_S
        while time.perf_counter() < end and not (acked and acked <= set(recv)) and len(recv) < n:
            time.sleep(0.05)
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
        last = max(recv.values()) if recv else t0
        return {i for i in acked if i is not None}, {i: recv[i] - sent[i] for i in recv}, last - t0


# -- upsycle chain -----------------------------------------------------------

class UpsycleChain(Chain):
    name = "upsycle federation"

    def __init__(self, tmp, period=1.0, catchup=2.0):
        self.tmp = tmp
        self.ports = [free_port() for _ in range(3)]
        self.procs = [None] * 3
        self.period = period
        self.catchup = catchup
        self.env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host") + os.pathsep + ROOT,
                        UPSYCLE_HOME=os.path.join(tmp, "home"))
        for i in range(3):
            self.start(i)

    def start(self, i):
        args = [sys.executable, "-m", "upsycle", "proxy", "--data", os.path.join(self.tmp, "p%d" % i),
                "--listen", "127.0.0.1:%d" % self.ports[i], "--overlay-period", str(self.period),
                "--catchup-period", str(self.catchup)]
        for j in (i - 1, i + 1):
            if 0 <= j < 3:
                args += ["--peer", "127.0.0.1:%d" % self.ports[j]]
        self.procs[i] = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.ports[i])


    async def status(self, i):
        from upsycle.proxy.status import fetch_status
        return await fetch_status("127.0.0.1", self.ports[i])

    async def subscribe_all(self):
        """A subscriber at M (so M carries the topic) and at B; returns B's."""
        from upsycle.client import Client
        subs = []
        for i in (1, 2):
            c = Client("127.0.0.1", self.ports[i], home=os.path.join(self.tmp, "sub%d" % i))
            await c.connect(15)
            await c.subscribe(TOPIC)
            subs.append(c)
        return subs

    def run(self, n, rate, on_tick=None):
        return asyncio.run(self._run(n, rate, on_tick))

    async def _run(self, n, rate, on_tick):
        from upsycle.client import Client
        subs = await self.subscribe_all()
        recv = {}
        sent = {}

        async def drain(c, mine):
            while True:
                d = await c.next_delivery()
                if not d.missed and mine:
                    i = int(d.payload[:12])
                    if i not in recv:
                        recv[i] = time.perf_counter()
        tasks = [asyncio.ensure_future(drain(c, k == 1)) for k, c in enumerate(subs)]
        pub = Client("127.0.0.1", self.ports[0], home=os.path.join(self.tmp, "pub"))
        await pub.connect(15)
        # the chain links up and M and B join the topic's ring before we time anything
        await pub.publish(TOPIC, b"%012d" % n + b"warm-up")
        end = time.perf_counter() + 30
        while n not in recv and time.perf_counter() < end:
            await asyncio.sleep(0.05)
        acked = set()
        futs = []
        t0 = time.perf_counter()
        for i in range(n):
            if rate:
                wait = t0 + i / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
            if on_tick:
                on_tick(time.perf_counter() - t0)
            sent[i] = time.perf_counter()
            f = await pub.publish_nowait(TOPIC, b"%012d" % i + b"x" * 52)
            f.add_done_callback(lambda f, i=i: acked.add(i) if not f.exception() else None)
            futs.append(f)
        end = time.perf_counter() + SETTLE_S
        while time.perf_counter() < end and not (len(acked) == n and acked <= set(recv)):
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await pub.close()
        for c in subs:
            await c.close()
        recv.pop(n, None)
        last = max(recv.values()) if recv else t0
        return acked, {i: recv[i] - sent[i] for i in recv if i in sent}, last - t0


# -- the rounds --------------------------------------------------------------

def measured(chain, fn):
    c0, s0 = self_cpu(), chain.cpu()
    out = fn()
    return out, self_cpu() - c0, chain.cpu() - s0


def throughput(make, n):
    with tempfile.TemporaryDirectory() as tmp:
        ch = make(tmp)
        try:
            (acked, lat, secs), ccpu, scpu = measured(ch, lambda: ch.run(n, 0))
        finally:
            ch.close()
    return {"rate": len(lat) / secs if secs else 0.0, "got": len(lat), "client_us": ccpu / n * 1e6,
            "server_us": scpu / n * 1e6}


def latency(make, n, rate):
    with tempfile.TemporaryDirectory() as tmp:
        ch = make(tmp)
        try:
            (acked, lat, secs), ccpu, scpu = measured(ch, lambda: ch.run(n, rate))
        finally:
            ch.close()
    v = list(lat.values())
    return {"p50": pct(v, 0.5) * 1000, "p99": pct(v, 0.99) * 1000, "client_us": ccpu / n * 1e6,
            "server_us": scpu / n * 1e6}


def kill_middle(make):
    n = int(KILL_RATE * KILL_RUN_S)
    with tempfile.TemporaryDirectory() as tmp:
        ch = make(tmp)
        state = {"killed": False, "restarted": False}

        def tick(t):
            if t >= KILL_AT_S and not state["killed"]:
                state["killed"] = True
                ch.kill_middle()
            if t >= RESTART_AT_S and not state["restarted"]:
                state["restarted"] = True
                threading.Thread(target=ch.restart_middle, daemon=True).start()
        try:
            acked, lat, secs = ch.run(n, KILL_RATE, tick)
        finally:
            ch.close()
    return {"acked": len(acked), "lost": len(acked - set(lat)), "received": len(lat)}


async def _idle(tmp, seconds):
    ch = UpsycleChain(tmp, period=5.0, catchup=10.0)
    try:
        subs = []
        from upsycle.client import Client
        for i in range(3):
            c = Client("127.0.0.1", ch.ports[i], home=os.path.join(tmp, "idle%d" % i))
            await c.connect(15)
            await c.subscribe(TOPIC)
            subs.append(c)
        await asyncio.sleep(15)   # links up, rings formed

        async def tx():
            out = []
            for i in range(3):
                st = await ch.status(i)
                out.append(sum(p["tx_bytes"] for p in st["federation"]["peers"]))
            return out
        a = await tx()
        await asyncio.sleep(seconds)
        b = await tx()
        for c in subs:
            await c.close()
        return [(y - x) * 60.0 / seconds for x, y in zip(a, b)]
    finally:
        ch.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000, help="messages in the throughput rows")
    ap.add_argument("--idle-s", type=float, default=60.0, help="seconds of idle overlay measured")
    args = ap.parse_args()
    from upsycle.crypto_nacl import install
    install()
    systems = [(MosquittoChain.name, MosquittoChain), (UpsycleChain.name, UpsycleChain)]
    thr = {name: throughput(make, args.messages) for name, make in systems}
    rate = min(500.0, min(t["rate"] for t in thr.values()) / 2)
    lat = {name: latency(make, int(rate * 5), rate) for name, make in systems}
    kills = {name: kill_middle(make) for name, make in systems}
    rows = []
    for name, _ in systems:
        t, lt, k = thr[name], lat[name], kills[name]
        rows.append((name, t["rate"], lt["p50"], lt["p99"], k["acked"], k["lost"], t["client_us"], t["server_us"]))
    mq, us = rows
    rows.append(("ratio upsycle / mosquitto", us[1] / mq[1], us[2] / mq[2], us[3] / mq[3], "", "", us[6] / mq[6],
                 us[7] / mq[7]))
    print(render("A -> M -> B, 64-byte payloads, QoS 1 / durable (latency at %.0f msg/s; kill: %d msg/s, M "
                 "SIGKILLed at %.0f s, back at %.0f s)" % (rate, KILL_RATE, KILL_AT_S, RESTART_AT_S),
                 ["system", "msg/s", "p50 ms", "p99 ms", "acked (kill)", "lost (kill)", "client CPU us/msg",
                  "3 brokers CPU us/msg"], rows))
    with tempfile.TemporaryDirectory() as tmp:
        idle = asyncio.run(_idle(tmp, args.idle_s))
    print(render("idle overlay maintenance, defaults (gossip 5 s, catch-up 10 s), 3 proxies, 1 topic",
                 ["proxy", "bytes sent per minute"], [("A", idle[0]), ("M", idle[1]), ("B", idle[2])]))


if __name__ == "__main__":
    main()
