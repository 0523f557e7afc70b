"""Benchmark: upsycle proxy (durable acks) against Mosquitto 2.x at QoS 1.

    PYTHONPATH=host:. /tmp/v/bin/python tools/bench/bench_proxy.py [--messages N] [--window W]

Both brokers run on loopback in this run, with persistence on:
- Mosquitto (the Debian package), started here with a generated config in a
  temp dir (persistence true); driven by paho-mqtt at QoS 1. Mosquitto sends
  PUBACK before anything reaches disk (it saves its database on an interval).
- `upsycle proxy` as a subprocess with a temp data dir; driven by our async
  client. Every s_puback is sent after the SQLite transaction holding the
  message is synced (WAL, synchronous=FULL).

Scenarios (64-byte payloads): 1 publisher -> 1 subscriber on one topic, and
10 -> 10 as ten pairs on ten topics. Each publisher keeps at most W messages
unacknowledged (paho: max_inflight_messages; ours: the session window).
Throughput = messages delivered / time from first publish to last delivery;
latency = publish call to delivery at the subscriber (payload carries the
send time), p50 and p99. Each system runs --rounds times per scenario,
alternating, and the median is shown (this machine is shared and noisy).
"""
import argparse
import asyncio
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "host"))
sys.path.insert(0, ROOT)

from upsycle.client import HOST_WINDOW_DEFAULT  # noqa: E402
from upsycle.processes import free_port, stop, wait_port  # noqa: E402

PAYLOAD = 64


def find_mosquitto():
    for p in ("/usr/sbin/mosquitto", shutil.which("mosquitto")):
        if p and os.path.exists(p):
            return p
    sys.exit("mosquitto not found at /usr/sbin/mosquitto or on PATH: "
             "apt-get install -y mosquitto (tools/setup.sh installs it)")




def payload(i):
    return struct.pack(">QQ", time.perf_counter_ns(), i).ljust(PAYLOAD, b"x")


def median_round(rs):
    out = dict(rs[0])
    for k in ("rate", "p50", "p99"):
        out[k] = statistics.median(r[k] for r in rs)
    return out


def summary(name, n, t0, t1, lat):
    lat = sorted(lat)
    return {"name": name, "n": n, "rate": n / (t1 - t0),
            "p50": lat[len(lat) // 2] / 1e6, "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6}


# -- Mosquitto + paho ------------------------------------------------------

def run_mosquitto(tmp, pairs, per_pub, window):
    import paho.mqtt.client as mqtt
    port = free_port()
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
                "persistence_location %s/\nmax_inflight_messages %d\nmax_queued_messages 100000\n"
                "log_dest none\n" % (port, tmp, window))
    proc = subprocess.Popen([find_mosquitto(), "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        lat = []
        lock = threading.Lock()
        done = threading.Event()
        total = pairs * per_pub
        got = [0]
        t_last = [0.0]
        subs, pubs = [], []
        for i in range(pairs):
            ready = threading.Event()
            s = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bsub%d" % i, clean_session=False)

            def on_message(c, u, m):
                t = time.perf_counter_ns()
                sent = struct.unpack(">Q", m.payload[:8])[0]
                with lock:
                    lat.append(t - sent)
                    got[0] += 1
                    if got[0] == total:
                        t_last[0] = time.perf_counter()
                        done.set()

            s.on_message = on_message
            s.on_subscribe = lambda c, u, mid, rc, p, ev=ready: ev.set()
            s.connect("127.0.0.1", port)
            s.loop_start()
            s.subscribe("bench/%d" % i, qos=1)
            ready.wait(5)
            subs.append(s)
        slots = []
        for i in range(pairs):
            p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bpub%d" % i)
            p.max_inflight_messages_set(window)
            sem = threading.Semaphore(window)
            # The publisher waits for PUBACKs beyond its window, like ours:
            # latency then measures the broker, not a queue in the client.
            p.on_publish = lambda c, u, mid, rc, props, sem=sem: sem.release()
            p.connect("127.0.0.1", port)
            p.loop_start()
            pubs.append(p)
            slots.append(sem)
        time.sleep(0.3)
        t0 = time.perf_counter()

        def publisher(p, i):
            sem = slots[i]
            for k in range(per_pub):
                sem.acquire()
                p.publish("bench/%d" % i, payload(k), qos=1)

        ths = [threading.Thread(target=publisher, args=(p, i)) for i, p in enumerate(pubs)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        if not done.wait(120):
            raise RuntimeError("mosquitto run delivered %d of %d" % (got[0], total))
        for c in subs + pubs:
            c.loop_stop()
            c.disconnect()
        return summary("mosquitto QoS1", total, t0, t_last[0], lat)
    finally:
        stop(proc)


# -- upsycle proxy ---------------------------------------------------------

def run_upsycle(tmp, pairs, per_pub, window, secure=False, transport="tcp", name="upsycle durable"):
    """secure=False: plaintext sessions (the proxy runs with --insecure), as
    Mosquitto's are; bench_secure.py compares secure and plaintext."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host") + os.pathsep + ROOT,
               UPSYCLE_HOME=os.path.join(tmp, "home"))
    proc = subprocess.Popen([sys.executable, "-m", "upsycle", "proxy", "--data", os.path.join(tmp, "data"),
                             "--listen", "127.0.0.1:%d" % port] + ([] if secure else ["--insecure"]), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        return asyncio.run(_upsycle_clients(port, pairs, per_pub, window, secure, transport, name,
                                            os.path.join(tmp, "home")))
    finally:
        stop(proc)


async def _upsycle_clients(port, pairs, per_pub, window, secure=False, transport="tcp",
                           name="upsycle durable", home=None):
    from upsycle.client import Client

    def make(label):
        if secure:
            return Client("127.0.0.1", port, identity=os.urandom(32), window=window, transport=transport,
                          home=home)
        return Client("127.0.0.1", port, node_id=label, window=window, transport=transport, secure=False)

    total = pairs * per_pub
    lat = []
    subs = [make(b"bsub%d" % i) for i in range(pairs)]
    pubs = [make(b"bpub%d" % i) for i in range(pairs)]
    for c in subs + pubs:
        await c.connect()
    for i, s in enumerate(subs):
        await s.subscribe("bench/%d" % i)
    done = asyncio.Event()
    got = [0]
    t_last = [0.0]

    async def subscriber(s):
        while True:
            d = await s.next_delivery()
            t = time.perf_counter_ns()
            lat.append(t - struct.unpack(">Q", d.payload[:8])[0])
            got[0] += 1
            if got[0] == total:
                t_last[0] = time.perf_counter()
                done.set()

    async def publisher(p, i):
        topic = "bench/%d" % i
        futs = []
        for k in range(per_pub):
            futs.append(await p.publish_nowait(topic, payload(k)))
        await asyncio.gather(*futs)

    readers = [asyncio.ensure_future(subscriber(s)) for s in subs]
    t0 = time.perf_counter()
    await asyncio.gather(*(publisher(p, i) for i, p in enumerate(pubs)))
    await asyncio.wait_for(done.wait(), 120)
    for r in readers:
        r.cancel()
    for c in subs + pubs:
        await c.close()
    return summary(name, total, t0, t_last[0], lat)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10000, help="messages per scenario (split over publishers)")
    ap.add_argument("--window", type=int, default=HOST_WINDOW_DEFAULT,
                    help="unacknowledged publishes per publisher (default: the host client's)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per system and scenario (median shown)")
    ap.add_argument("--secure", action="store_true",
                    help="our side over Noise-encrypted links (the default product setting); "
                         "Mosquitto stays plaintext MQTT")
    args = ap.parse_args()
    find_mosquitto()
    rows = []
    for pairs in (1, 10):
        per_pub = args.messages // pairs
        ms, us = [], []
        # Rounds alternate the two systems so a noisy neighbour hits both;
        # the table shows the median round of each.
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
                ms.append(run_mosquitto(t1, pairs, per_pub, args.window))
                us.append(run_upsycle(t2, pairs, per_pub, args.window, secure=args.secure,
                                      name="upsycle secure" if args.secure else "upsycle durable"))
        rows.append(("%d -> %d" % (pairs, pairs), median_round(ms), median_round(us)))
    print("\n%-8s | %-16s | %9s | %8s | %8s" % ("scenario", "system", "msg/s", "p50 ms", "p99 ms"))
    print("-" * 62)
    for name, m, u in rows:
        for r in (m, u):
            print("%-8s | %-16s | %9.0f | %8.2f | %8.2f" % (name, r["name"], r["rate"], r["p50"], r["p99"]))
        print("%-8s | %-16s | %8.2fx | %7.2fx | %7.2fx   (upsycle / mosquitto; target >= 1.0x rate, p99 <= 2.0x)" % (
            name, "ratio", u["rate"] / m["rate"], u["p50"] / m["p50"], u["p99"] / m["p99"]))
    print("\n%d messages per scenario, %d-byte payloads, window %d, median of %d rounds; upsycle acks "
          "after fsync (SQLite WAL, synchronous=FULL), %s; mosquitto QoS 1 (plaintext) acks before any "
          "disk write." % (args.messages, PAYLOAD, args.window, args.rounds,
                           "Noise XX links" if args.secure else "plaintext links"))


if __name__ == "__main__":
    main()
