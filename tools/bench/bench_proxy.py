"""Benchmark: upsycle proxy (durable acks) against Mosquitto 2.x at QoS 1.

    .venv/bin/python tools/bench/bench_proxy.py [--messages N] [--rounds R] [--quick] [--secure]
        [--pairs 1,10] [--root DIR] [--loops asyncio,uvloop]

Both run on loopback in this run, with persistence on, alternating round by
round so a noisy neighbour hits both; the tables show medians of the rounds.

- Mosquitto (the Debian broker, generated config, persistence true) acks QoS 1
  before anything reaches disk. It is driven two ways and both are shown:
  by its own C clients (``mosquitto_pub -l -q 1 -M W`` fed from a pipe,
  ``mosquitto_sub -q 1 -C N``) and by several loadgen.py processes speaking
  MQTT. The faster of the two is the anchor of the ratios.
- ``upsycle proxy`` (a subprocess, fresh data dir; plaintext like Mosquitto
  unless --secure) acks once the SQLite transaction holding the message is
  synced (the WAL fdatasynced; store_sync.py). Driven by several loadgen.py processes.

Scenarios (64-byte payloads): 1 publisher -> 1 subscriber on one topic, and
10 -> 10 as ten pairs on ten topics; each publisher keeps at most W messages
unacknowledged (mosquitto_pub -M W; loadgen's window), and each subscriber
takes at most W deliveries in flight (Mosquitto's max_inflight_messages; the
session window).

- Throughput rounds: every publisher sends its share as fast as its window
  allows; msg/s = messages delivered / (go -> last delivery).
- Latency rounds: every publisher sends at the same fixed rate on both
  systems (--latency-rate, aggregate; default half of the slower system's
  throughput in this run, so neither is saturated): p50/p99 from the moment
  a message is handed to the client (its payload carries that wall-clock
  time; for mosquitto_pub, when the line is written to its pipe) to its
  arrival at the subscriber (mosquitto_sub's %U, loadgen's clock).
  Mosquitto runs these rounds with both drivers, and the one with the
  lower p99 is the anchor (named in the table). Saturated latency is not
  shown: it is only window / throughput.

``--root DIR`` runs the proxy of another checkout (e.g. the commit before a
change, unpacked with ``git archive``) with this checkout's load generators
and Mosquitto as before; ``--pairs`` picks the scenarios. ``--loops
asyncio,uvloop`` runs our proxy once per event loop named (its ``--loop``)
in every round, each in turn with Mosquitto (the order rotating round by
round), each with its own ratio rows; by default the proxy's own choice.

Client CPU: user + system seconds of the client processes (per message in
microseconds), so a reader sees whether a client was the limit; broker CPU
likewise, read from /proc over the run.
"""
import argparse
import asyncio
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "host"))
sys.path.insert(0, ROOT)

from upsycle.client import HOST_WINDOW_DEFAULT  # noqa: E402
from upsycle.processes import free_port, stop, wait_port  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokers  # noqa: E402
import table  # noqa: E402

PAYLOAD = 64




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


def _pct(lat, q):
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(len(lat) * q))] / 1000.0 if lat else float("nan")


def pair_specs(kind, port, pairs, per_pub, window, procs, rate, secure=False, transport="tcp", salt=""):
    """loadgen specs: publishers spread over half the processes, subscribers
    over the other half (so they run side by side, like mosquitto_pub/sub)."""
    pubs = [["pub%d" % i, None, "bench/%s/%d" % (salt, i), per_pub, rate, [], 0] for i in range(pairs)]
    subs = [["sub%d" % i, None, None, 0, 0, ["bench/%s/%d" % (salt, i)], per_pub] for i in range(pairs)]
    kp = max(1, procs // 2)
    ks = max(1, procs - kp)
    groups = [g for g in brokers.split(pubs, min(kp, len(pubs))) + brokers.split(subs, min(ks, len(subs))) if g]
    return [{"proto": kind, "transport": transport, "secure": secure, "host": "127.0.0.1", "port": port,
             "window": window, "payload": PAYLOAD, "sessions": g, "salt": salt} for g in groups]


def gen_round(system, kind, pairs, per_pub, window, procs, rate, secure=False):
    specs = pair_specs(kind, system.port, pairs, per_pub, window, procs, rate, secure, salt=os.urandom(4).hex())
    c0 = system.cpu()
    results, t_go = brokers.run_loadgens(specs)
    bcpu = system.cpu() - c0
    n = sum(r["got"] for r in results)
    if n != pairs * per_pub:
        raise RuntimeError("%s delivered %d of %d (errors %s)" % (system.name, n, pairs * per_pub,
                                                                 [r["errors"] for r in results]))
    t_last = max(r["t_last"] for r in results)
    lat = [x for r in results for x in r["lat_us"]]
    return {"rate": n / (t_last - t_go), "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
            "ccpu": sum(r["cpu_s"] for r in results), "bcpu": bcpu, "n": n, "procs": len(specs)}


def c_round(system, pairs, per_pub, window, rate):
    c0 = system.cpu()
    lat, t_go, t_last, ccpu = brokers.run_c_clients(system.port, pairs, per_pub, window, PAYLOAD, rate)
    return {"rate": len(lat) / (t_last - t_go), "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
            "ccpu": ccpu, "bcpu": system.cpu() - c0, "n": len(lat), "procs": 2 * pairs}


def med(rs):
    out = dict(rs[0])
    for k in ("rate", "p50", "p99", "ccpu", "bcpu"):
        out[k] = statistics.median(r[k] for r in rs)
    return out


def in_turn(k, first, *others):
    """Round k runs the systems in turn, the first one first in even
    rounds and last in odd ones (A B, B A, A B...; with three, A B C, C B A,
    ...): a neighbour whose load rises or falls over a run, or what one
    system leaves behind (dirty pages written back, processes still
    exiting), then weighs on all alike."""
    order = (first,) + others
    for run in (order if k % 2 == 0 else order[::-1]):
        run()


def run_scenario(args, pairs, tmp_root):
    per_pub = args.messages // pairs
    procs = args.procs or (2 if pairs == 1 else 4)
    ukeys = ["u"] if not args.loops else ["u:" + x for x in args.loops]
    res = dict((k, []) for k in ["c", "g"] + ukeys)
    for k in range(args.rounds):
        def mosquitto():
            with tempfile.TemporaryDirectory(dir=tmp_root) as t1:
                m = brokers.Mosquitto(t1, args.window)
                try:
                    res["c"].append(c_round(m, pairs, per_pub, args.window, 0))
                    res["g"].append(gen_round(m, "mqtt", pairs, per_pub, args.window, procs, 0))
                finally:
                    m.stop()

        def upsycle(key):
            def go():
                with tempfile.TemporaryDirectory(dir=tmp_root) as t2:
                    p = brokers.Proxy(t2, secure=args.secure, root=args.root, loop=key[2:] or None)
                    try:
                        res[key].append(gen_round(p, "upsycle", pairs, per_pub, args.window, procs, 0,
                                                  args.secure))
                    finally:
                        p.stop()
            return go
        in_turn(k, mosquitto, *[upsycle(u) for u in ukeys])
    tp = dict((k, med(v)) for k, v in res.items())
    anchor = "c" if tp["c"]["rate"] >= tp["g"]["rate"] else "g"
    rate = args.latency_rate or 0.5 * min([tp[anchor]["rate"]] + [tp[u]["rate"] for u in ukeys])
    per_rate = rate / pairs
    n_lat = max(200, int(per_rate * args.latency_s))
    # Mosquitto's latency with both drivers, and the lower p99 is the
    # anchor: a driver that is slow to stamp or read (mosquitto_sub formats
    # and prints every message; the feeder of mosquitto_pub is Python) must
    # not make the ratio look better than Mosquitto is.
    lat = dict((k, []) for k in ["c", "g"] + ukeys)
    for k in range(args.rounds):
        def mosquitto():
            with tempfile.TemporaryDirectory(dir=tmp_root) as t1:
                m = brokers.Mosquitto(t1, args.window)
                try:
                    lat["c"].append(c_round(m, pairs, n_lat, args.window, per_rate))
                    lat["g"].append(gen_round(m, "mqtt", pairs, n_lat, args.window, procs, per_rate))
                finally:
                    m.stop()

        def upsycle(key):
            def go():
                with tempfile.TemporaryDirectory(dir=tmp_root) as t2:
                    p = brokers.Proxy(t2, secure=args.secure, root=args.root, loop=key[2:] or None)
                    try:
                        lat[key].append(gen_round(p, "upsycle", pairs, n_lat, args.window, procs, per_rate,
                                                  args.secure))
                    finally:
                        p.stop()
            return go
        in_turn(k, mosquitto, *[upsycle(u) for u in ukeys])
    lat = dict((k, med(v)) for k, v in lat.items())
    lat["a"] = lat_anchor(lat)
    return tp, anchor, rate, lat, ukeys


def lat_anchor(lat):
    """Of Mosquitto's latency rounds by its C clients ("c") and by loadgen
    MQTT ("g"), the one with the lower p99, with its driver named."""
    key = "c" if lat["c"]["p99"] <= lat["g"]["p99"] else "g"
    return dict(lat[key], driver="C clients" if key == "c" else "loadgen MQTT")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=30000, help="messages per throughput round (split over publishers)")
    ap.add_argument("--window", type=int, default=HOST_WINDOW_DEFAULT,
                    help="unacknowledged publishes per publisher (default: the host client's)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per system and scenario (median shown)")
    ap.add_argument("--procs", type=int, default=0, help="load generator processes per system (default 2 for 1->1, 4 for 10->10)")
    ap.add_argument("--latency-rate", type=float, default=0, help="aggregate msg/s of the latency rounds (default: half the slower throughput)")
    ap.add_argument("--latency-s", type=float, default=3.0, help="length of a latency round in seconds")
    ap.add_argument("--secure", action="store_true",
                    help="our side over Noise-encrypted links (the default product setting); Mosquitto stays plaintext MQTT")
    ap.add_argument("--quick", action="store_true", help="5000 messages, 1 round, 1 s latency rounds")
    ap.add_argument("--pairs", default="1,10", help="scenarios: publisher/subscriber pairs, comma-separated")
    ap.add_argument("--root", default=brokers.ROOT, help="checkout whose proxy runs (default: this one)")
    ap.add_argument("--loops", default="", help="our proxy once per event loop named, comma-separated "
                    "(asyncio,uvloop: its --loop), each in turn with Mosquitto; default: the proxy's own choice")
    args = ap.parse_args()
    args.loops = [x for x in args.loops.split(",") if x]
    args.root = os.path.abspath(args.root)
    if args.quick:
        args.messages, args.rounds, args.latency_s = 5000, 1, 1.0
    brokers.need("mosquitto", "mosquitto")
    brokers.need("mosquitto_pub", "mosquitto-clients")
    ncpu = os.cpu_count()
    us_name = "upsycle secure" if args.secure else "upsycle durable"
    rows = []
    lat_rows = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_root:
        for pairs in [int(x) for x in args.pairs.split(",")]:
            tp, anchor, rate, lat, ukeys = run_scenario(args, pairs, tmp_root)
            sc = "%d -> %d" % (pairs, pairs)
            a = tp[anchor]
            named = [(u, us_name + ("" if u == "u" else " " + u[2:])) for u in ukeys]
            for key, system, driver in [("c", "mosquitto", "C clients"), ("g", "mosquitto", "loadgen MQTT")] + [
                    (u, name, "loadgen") for u, name in named]:
                r = tp[key]
                rows.append((sc, system + (" *" if key == anchor else ""), "%s x%d" % (driver, r["procs"]),
                             r["rate"], r["ccpu"], 1e6 * r["ccpu"] / r["n"], 1e6 * r["bcpu"] / r["n"]))
            for u, name in named:
                r = tp[u]
                rows.append((sc, "ratio", "%s / *" % name.replace(" durable", ""), "%.2fx" % (
                    r["rate"] / a["rate"]), "", "", "%.2fx" % (r["bcpu"] / max(a["bcpu"], 1e-9))))
            for u, name in named:
                lu = lat[u]
                lat_rows.append((sc, name, rate, lat["a"]["driver"], lat["a"]["p50"], lat["a"]["p99"], lu["p50"],
                                 lu["p99"], "%.2fx" % (lu["p99"] / lat["a"]["p99"]),
                                 1e6 * lat["a"]["ccpu"] / lat["a"]["n"], 1e6 * lu["ccpu"] / lu["n"],
                                 1e6 * lu["bcpu"] / lu["n"]))
    print()
    print(table.render("Throughput (flat out, window %d, %d messages per round, median of %d rounds; * = anchor; "
                       "proxy from %s)" % (args.window, args.messages, args.rounds, args.root),
        ("scenario", "system", "driver", "msg/s", "client CPU s", "client CPU us/msg", "broker CPU us/msg"), rows))
    print()
    print(table.render("Latency at the same offered rate (both systems; median of %d rounds of %.0f s; Mosquitto "
                       "by the driver with the lower p99)" % (args.rounds, args.latency_s),
        ("scenario", "upsycle", "msg/s offered", "mosquitto driver", "mosquitto p50 ms", "mosquitto p99 ms",
         "upsycle p50 ms", "upsycle p99 ms",
         "p99 ratio", "mosq client us/msg", "upsycle client us/msg", "upsycle broker us/msg"), lat_rows))
    print("\nload average (1 min) at the start %.1f, at the end %.1f" % (load0, os.getloadavg()[0]))
    print("\n%d-byte payloads; upsycle acks after the SQLite WAL's fdatasync, %s; mosquitto QoS 1 "
          "(plaintext, persistence on) acks before any disk write. %d CPUs shared by broker and clients: "
          "compare ratios within this run, not absolute figures across runs. Targets: throughput >= 1.0x, "
          "p99 <= 2.0x." % (PAYLOAD, "Noise XX links" if args.secure else "plaintext links", ncpu))


if __name__ == "__main__":
    main()
