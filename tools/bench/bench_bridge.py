"""Benchmark: readings through proxy -> `upsycle bridge mqtt` -> Mosquitto ->
a subscriber, against a direct paho publish of the same readings to the
same broker in the same run.

    PYTHONPATH=host:. .venv/bin/python tools/bench/bench_bridge.py [--readings N] [--rounds R]

Set-up (all on loopback, started here): Mosquitto (the Debian package,
generated config, persistence off: both sides use the same broker, so its
disk policy cancels out), `upsycle proxy` (SQLite, durable acks, secure
Noise links as deployed), and the bridge as its own process, a member of a
private topic. A board is played by this process: it appends each reading
to its DMC replica, seals and signs the op with its member keys and
publishes it through the proxy as a compact signed reading (window of 128,
what a host client keeps in flight) -- what firmware/topic.py does on a
board that holds read rights. A paho subscriber
(QoS 1) takes the bridge's messages.

Anchor, same run, same broker: a paho client publishes the same readings'
JSON payloads at QoS 1 (the same 128 in flight) to a topic the same
subscriber follows.

Figures: readings/s = readings / (first publish -> last message at the
subscriber); latency = publish call -> message at the subscriber, p50 and
p99; "added" is the bridge path's latency minus the direct one. CPU: the
bridge and proxy processes (from /proc, user+system), and this process
(the publishing side and the subscriber thread) for each side.
"""
import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "host"))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from table import render  # noqa: E402
import brokers  # noqa: E402
from upsycle.processes import free_port, wait_port  # noqa: E402

WINDOW = 128
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host") + os.pathsep + ROOT)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu():
    t = os.times()
    return t.user + t.system


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


class Subscriber:
    def __init__(self, port, topic_filter, n):
        import paho.mqtt.client as mqtt
        self.recv = {}
        self.n = n
        self.done = threading.Event()
        self.last = 0.0
        ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub-%d" % os.getpid())
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic_filter, qos=1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not ready.wait(10):
            raise RuntimeError("subscriber did not subscribe")
        self.c = c

    def _on_message(self, c, u, m):
        t = time.perf_counter()
        if not m.payload or m.retain:
            return
        try:
            i = json.loads(m.payload)["value"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(i, int) and i not in self.recv:
            self.recv[i] = t
            self.last = t
            if len(self.recv) >= self.n:
                self.done.set()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def run_direct(broker_port, n, run_id, gap=0.0):
    import paho.mqtt.client as mqtt
    topic = "bench/direct/%s/temp" % run_id
    sub = Subscriber(broker_port, topic, n)
    p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub-%s" % run_id)
    p.max_inflight_messages_set(WINDOW)
    sem = threading.Semaphore(WINDOW)
    p.on_publish = lambda c, u, mid, rc, props: sem.release()
    p.connect("127.0.0.1", broker_port)
    p.loop_start()
    sent = {}
    c0 = self_cpu()
    t0 = time.perf_counter()
    for i in range(n):
        sem.acquire()
        payload = json.dumps({"value": i, "unit": "°C", "time": 1700000000 + i, "author": "00" * 8,
                              "seq": i + 1}, separators=(",", ":"), sort_keys=True)
        sent[i] = time.perf_counter()
        p.publish(topic, payload, qos=1, retain=True)
        if gap:
            time.sleep(gap)
    if not sub.done.wait(120):
        raise RuntimeError("direct: %d of %d arrived" % (len(sub.recv), n))
    cpu = self_cpu() - c0
    lat = [sub.recv[i] - sent[i] for i in range(n)]
    p.loop_stop()
    p.disconnect()
    sub.close()
    return {"rate": n / (sub.last - t0), "p50": pct(lat, 0.5) * 1000, "p99": pct(lat, 0.99) * 1000,
            "cpu_self": cpu}


async def _board(proxy_port, invite, home, n, sent, gap=0.0):
    from shared_protocol.dmc.replica import Replica
    from shared_protocol.groups.invite import member_from_url
    from upsycle.client import Client
    member = member_from_url(invite)
    replica = Replica(os.urandom(8), 200)
    c = Client("127.0.0.1", proxy_port, identity=os.urandom(32), home=home)
    await c.connect(timeout=15)
    futs = []
    t_base = int(time.time())
    for i in range(n):
        op = replica.append("temp", t_base, i)
        # a compact signed reading, what a board with read rights sends
        # (firmware/topic.py; the key and capability ride along now and then)
        sealed = member.seal_reading(op, os.urandom(32), t_base)
        sent[i] = time.perf_counter()
        futs.append(await c.publish_nowait(member.topic, sealed))
        if gap:
            await asyncio.sleep(gap)
    await asyncio.gather(*futs)
    await c.close()


def run_bridge(tmp, broker_port, n, run_id, gap=0.0):
    from shared_protocol.groups.admin import Admin
    from shared_protocol.groups.invite import invite_url, member_from_url
    from upsycle.topic_store import TopicStore
    proxy_port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "upsycle", "proxy", "--data", os.path.join(tmp, "proxy"),
                              "--listen", "127.0.0.1:%d" % proxy_port], env=ENV, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bridge = None
    try:
        wait_port(proxy_port)
        admin = Admin(os.urandom(32), os.urandom(32), 0, "bench%s" % run_id)
        home = os.path.join(tmp, "bridge")
        TopicStore(home).save(member_from_url(invite_url(admin.invite(os.urandom(32), read=True))))
        sub = Subscriber(broker_port, "upsycle/bench%s/+/temp" % run_id, n)
        logf = open(os.path.join(tmp, "bridge.log"), "w")
        prof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        bridge = subprocess.Popen([sys.executable] + prof + ["-m", "upsycle", "bridge", "mqtt", "--home", home,
                                   "--proxy", "127.0.0.1:%d" % proxy_port, "--broker",
                                   "127.0.0.1:%d" % broker_port], env=ENV, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=logf)
        logf.close()
        # Ready once connected to the broker; then a moment for its proxy
        # subscription, so the first readings do not wait for it.
        end = time.time() + 30
        while "event=broker_connected" not in open(os.path.join(tmp, "bridge.log")).read():
            if bridge.poll() is not None or time.time() > end:
                raise RuntimeError("bridge did not start: " + open(os.path.join(tmp, "bridge.log")).read()[-2000:])
            time.sleep(0.1)
        time.sleep(1.5)
        sent = {}
        cb0, cp0, cs0 = cpu_s(bridge.pid), cpu_s(proxy.pid), self_cpu()
        t0 = time.perf_counter()
        invite = invite_url(admin.invite(os.urandom(32), read=True, write=True))
        asyncio.run(_board(proxy_port, invite, os.path.join(tmp, "board"), n, sent, gap))
        if not sub.done.wait(300):
            raise RuntimeError("bridge: %d of %d arrived" % (len(sub.recv), n))
        cb, cp, cs = cpu_s(bridge.pid) - cb0, cpu_s(proxy.pid) - cp0, self_cpu() - cs0
        lat = [sub.recv[i] - sent[i] for i in range(n)]
        sub.close()
        return {"rate": n / (sub.last - t0), "p50": pct(lat, 0.5) * 1000, "p99": pct(lat, 0.99) * 1000,
                "cpu_bridge": cb, "cpu_proxy": cp, "cpu_self": cs}
    finally:
        for p in (bridge, proxy):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(15)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=1000, help="readings of the burst (throughput) run")
    ap.add_argument("--paced", type=int, default=200, help="readings of the paced (latency) run")
    ap.add_argument("--rate", type=float, default=50.0, help="readings per second of the paced run")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-bridge-")
    port = free_port()
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages %d\n"
                "max_queued_messages 100000\nlog_dest none\n" % (port, WINDOW))
    broker = subprocess.Popen([brokers.need("mosquitto", "mosquitto"), "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = {"burst": ([], [], a.readings, 0.0), "paced": ([], [], a.paced, 1.0 / a.rate)}
    try:
        wait_port(port)
        k = 0
        for r in range(a.rounds):
            for name in ("burst", "paced"):
                direct, bridged, n, gap = runs[name]
                k += 1
                direct.append(run_direct(port, n, "%d" % k, gap))
                rd = os.path.join(tmp, "run%d" % k)
                os.makedirs(rd)
                bridged.append(run_bridge(rd, port, n, "%d" % k, gap))
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(rs, key):
        return statistics.median(x[key] for x in rs)
    rows = []
    for name in ("burst", "paced"):
        direct, bridged, n, gap = runs[name]
        label = "%d readings at once" % n if not gap else "%d readings, %g/s" % (n, a.rate)
        rows.append([label, "direct paho QoS 1 (anchor)", med(direct, "rate"), med(direct, "p50"),
                     med(direct, "p99"), "-", "-", med(direct, "cpu_self") * 1000 / n, "1.00"])
        rows.append([label, "board -> proxy -> bridge -> Mosquitto", med(bridged, "rate"), med(bridged, "p50"),
                     med(bridged, "p99"), med(bridged, "cpu_bridge") * 1000 / n,
                     med(bridged, "cpu_proxy") * 1000 / n, med(bridged, "cpu_self") * 1000 / n,
                     "%.2f" % (med(bridged, "rate") / med(direct, "rate"))])
    print(render("MQTT bridge: median of %d rounds (loopback; this machine is shared and noisy)" % a.rounds,
                 ["run", "path", "readings/s", "p50 ms", "p99 ms", "bridge CPU ms/reading",
                  "proxy CPU ms/reading", "this process CPU ms/reading", "rate vs anchor"], rows))
    direct, bridged, _, _ = runs["paced"]
    print("latency added by proxy + bridge at %g readings/s: p50 %+.1f ms, p99 %+.1f ms" % (
        a.rate, med(bridged, "p50") - med(direct, "p50"), med(bridged, "p99") - med(direct, "p99")))
    print("(this process: the publishing side (the board seals and signs each op with libsodium; the\n"
          " anchor only publishes) and the paho subscriber thread)")


if __name__ == "__main__":
    main()
