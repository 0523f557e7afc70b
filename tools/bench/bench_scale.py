"""Benchmark: how the proxy's cost grows with sessions and with stored history.

    .venv/bin/python tools/bench/bench_scale.py [--quick] [--only sessions|store|handshake] [--sessions N ...]
        [--transports udp tcp] [--profile | --tracemalloc] [--no-anchor] [--root DIR]

Sessions: N = 10, 1,000, 10,000 concurrent Noise sessions (UDP, then TCP),
each owning one topic it publishes to at a low rate (together
``--aggregate`` msg/s, default 1,000) and subscribed to ``--fanout`` (3)
other sessions' topics. Several loadgen.py processes hold the sessions, from
several loopback source addresses. Printed: proxy RSS per session (RSS with
the sessions connected and subscribed, less RSS before), proxy CPU per
published message over the measured interval, the load generators' CPU, and
p50/p99 publish -> delivery, and how long the broker's and the generators'
threads waited for a CPU (Linux schedstat: on a shared machine a high figure
means the machine, not the process's own work, held it back). Mosquitto holds the same number of MQTT
connections with the same topics and rates in the same run (TCP; MQTT has no
UDP), as the anchor.

Store: a store holding 10^6 messages over 10^4 topics (written through the
proxy's Store, as the proxy writes them), one of them a topic with a
100,000-message backlog for a subscriber that is away. Printed: proxy
start-up time on that store (process start to listening) after a clean stop
and after SIGKILL (then the store scans every page for damage), beside a
start on an empty directory; the cost of a retention pass (the age sweep
over every topic, in as many bounded transactions as it takes: nothing
expired, then 10% of every topic expired), and the rate at which the returning subscriber
(a Noise TCP session, window 128) receives its 100,000 messages. Mosquitto
in the same run: a persistent session (clean session off) with 100,000
queued QoS 1 messages reconnecting (mosquitto_sub -c), the same payloads.

Handshake: both sides of a Noise XX handshake with the host's HMAC in C
against the boards' pure-Python one (the anchor), in one process.

--profile: the proxy runs under cProfile (profile_proxy.py's runner) from
all sessions ready to the last report; printed: its event loop's time by
area and function, each thread's CPU, the store's commits and the cyclic
collector's pauses. --root DIR: another checkout's proxy (e.g. the commit
before, unpacked with git archive) with this checkout's load generators.
--tracemalloc: the proxy runs under tracemalloc; printed: its bytes and
blocks per session by allocation site, and the objects the cyclic
collector tracks per session (all sessions connected and subscribed, less
the proxy after start-up). --no-anchor: no Mosquitto rows.

--quick: 10, 100, 1,000 sessions for 5 s; 10^5 messages over 10^3 topics
with a 20,000-message backlog. Everything runs on one shared machine: the
proxy, Mosquitto and the load generators compete for the same CPUs, so read
the ratios in one run.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import signal
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brokers  # noqa: E402
import profile_proxy  # noqa: E402
import table  # noqa: E402

ROOT = brokers.ROOT
PAYLOAD = 64
# How long the returning MQTT subscriber may take for its backlog.
BACKLOG_TIMEOUT_S = 120
BACKLOG_PUB_CHUNK = 20000   # lines per mosquitto_pub run when queueing the backlog
# Limits of a proxy configured for this many sessions on one host: every
# loadgen connects from loopback, so the per-address limits are raised with
# the totals (a deployment of this size sets them likewise; per address one
# less than the total, as the proxy requires).
SCALE_CONFIG = """
[limits]
max_connections = %(n)d
max_connections_per_host = %(per)d
max_sessions = %(n)d
max_sessions_per_host = %(per)d
max_pending_per_host = 1024
max_handshakes = 1024
max_handshakes_per_host = 1024
handshake_rate = 100000
handshake_burst = 100000
max_topics = %(n)d
max_total_subscriptions = %(subs)d
"""


# Runs the proxy's command line with tracemalloc on; each SIGUSR1 writes a
# snapshot (argv[1] + ".N") and the count of objects the cyclic collector
# tracks (argv[1] + ".N.json"), then argv[1] + ".N.done".
TRACE_RUNNER = """
import gc, json, signal, sys, tracemalloc
tracemalloc.start(1)
out = sys.argv[1]
k = [0]
def snap(*a):
    tracemalloc.take_snapshot().dump(out + ".%d" % k[0])
    with open(out + ".%d.json" % k[0], "w") as f:
        json.dump({"tracked": len(gc.get_objects())}, f)
    open(out + ".%d.done" % k[0], "w").close()
    k[0] += 1
signal.signal(signal.SIGUSR1, snap)
sys.argv = ["upsycle"] + sys.argv[2:]
from upsycle.cli import main
sys.exit(main())
"""


def trace_snapshot(proc, path, k):
    """Ask a TRACE_RUNNER proxy for snapshot k and wait for it."""
    proc.send_signal(signal.SIGUSR1)
    for _ in range(1200):
        if os.path.exists("%s.%d.done" % (path, k)):
            return
        time.sleep(0.05)
    raise RuntimeError("the proxy wrote no memory snapshot")


def print_memory(path, n, label, top_n=20):
    """Bytes and objects per session by allocation site: snapshot 1 (all
    sessions connected and subscribed) less snapshot 0 (before any)."""
    import json
    import tracemalloc
    s0, s1 = tracemalloc.Snapshot.load(path + ".0"), tracemalloc.Snapshot.load(path + ".1")
    diff = s1.compare_to(s0, "lineno")
    total = sum(d.size_diff for d in diff)
    with open(path + ".0.json") as f0, open(path + ".1.json") as f1:
        tracked = (json.load(f1)["tracked"] - json.load(f0)["tracked"]) / float(n)
    rows = [("%s:%d" % (os.path.relpath(d.traceback[0].filename, ROOT) if d.traceback[0].filename.startswith(ROOT)
                        else os.path.basename(d.traceback[0].filename), d.traceback[0].lineno),
             "%.0f" % (d.size_diff / float(n)), "%.2f" % (d.count_diff / float(n))) for d in diff[:top_n]]
    print(table.render("Proxy memory per session by allocation site (%s): %.0f bytes traced and %.1f objects "
                       "tracked by the collector per session" % (label, total / float(n), tracked),
                       ("where", "bytes/session", "blocks/session"), rows))


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def runq_wait(pid):
    """Seconds a process's threads were runnable but waiting for a CPU
    (Linux schedstat): how much the shared machine, not the process's own
    work, held it back."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return total / 1e9


def pct(lat, q):
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(len(lat) * q))] / 1000.0 if lat else float("nan")


def session_rows(n, fanout, aggregate, salt):
    rate = aggregate / n
    rows = []
    for i in range(n):
        subs = ["s%s/%d" % (salt, (i + k) % n) for k in range(1, fanout + 1)] if n > fanout else []
        rows.append(["n%s-%d" % (salt, i), None, "s%s/%d" % (salt, i), 0, rate, subs, 0])
    return rows


def run_sessions(system, kind, n, args, transport, procs):
    salt = os.urandom(3).hex()
    rows = session_rows(n, args.fanout, args.aggregate, salt)
    groups = brokers.split(rows, procs)
    specs = []
    for k, g in enumerate(groups):
        src = "127.0.0.%d" % (10 + k)   # one source address per process
        for r in g:
            r[1] = src
        secure = kind == "upsycle" and not os.environ.get("BENCH_PLAIN")
        specs.append({"proto": kind, "transport": transport, "secure": secure, "host": "127.0.0.1",
                      "port": system.port, "window": 32, "payload": PAYLOAD, "sessions": g, "salt": salt,
                      "duration_s": args.duration, "drain_s": 3.0, "connect_parallel": 32, "timeout_s": 900,
                      "ready_s": 120})
    rss0 = system.rss_kb()
    holder = {}
    c0 = [None]

    def on_ready():
        # every session connected and subscribed, nothing published yet
        if args.profile and kind == "upsycle":
            system.proc.send_signal(signal.SIGUSR1)   # profile_proxy.RUNNER: profiler on
            holder["threads0"] = profile_proxy.thread_cpu(system.proc.pid)
        if args.tracemalloc and kind == "upsycle":
            trace_snapshot(system.proc, system.trace_path, 1)
        holder["rss1"] = system.rss_kb()
        c0[0] = system.cpu()
        holder["sys0"] = brokers.proc_sys_cpu(system.proc.pid)
        holder["loop0"] = (profile_proxy.thread_cpu(system.proc.pid).get(system.proc.pid, 0.0),
                           profile_proxy.thread_cpu(system.proc.pid, True).get(system.proc.pid, 0.0))
        holder["w0"] = runq_wait(system.proc.pid)

    def on_results():
        # read before the generators exit: 10,000 disconnects are not the run's work
        holder["cpu"] = system.cpu() - c0[0]
        holder["sys"] = brokers.proc_sys_cpu(system.proc.pid) - holder["sys0"]
        # the main thread: the event loop (Mosquitto's only thread)
        holder["loop"] = (profile_proxy.thread_cpu(system.proc.pid).get(system.proc.pid, 0.0) - holder["loop0"][0],
                          profile_proxy.thread_cpu(system.proc.pid, True).get(system.proc.pid, 0.0) -
                          holder["loop0"][1])
        holder["wait"] = runq_wait(system.proc.pid) - holder["w0"]
        if args.profile and kind == "upsycle":
            t1 = profile_proxy.thread_cpu(system.proc.pid)
            holder["threads"] = sorted(((tid, c - holder["threads0"].get(tid, 0.0)) for tid, c in t1.items()),
                                       key=lambda x: -x[1])
            system.proc.send_signal(signal.SIGUSR2)   # profiler off, written out

    results, t_go = brokers.run_loadgens(specs, timeout=1800, on_ready=on_ready, on_results=on_results)
    bcpu, bwait = holder["cpu"], holder["wait"]
    sent = sum(r["sent"] for r in results)
    got = sum(r["got"] for r in results)
    lat = [x for r in results for x in r["lat_us"]]
    if "threads" in holder:
        print("proxy CPU by thread over the run (us per publish): %s" % ", ".join(
            "%s %.0f" % ("event loop" if tid == system.proc.pid else "thread %d" % tid, 1e6 * c / max(1, sent))
            for tid, c in holder["threads"] if c > 0))
    return {"n": n, "rss_per_session": (holder["rss1"] - rss0) * 1024.0 / n, "rss_mb": holder["rss1"] / 1024.0,
            "cpu_us_per_msg": 1e6 * bcpu / max(1, sent),
            "sys_share_pct": 100.0 * holder["sys"] / max(bcpu, 1e-9),
            "loop_us": 1e6 * holder["loop"][0] / max(1, sent), "loop_sys_us": 1e6 * holder["loop"][1] / max(1, sent), "bcpu_pct": 100.0 * bcpu / args.duration,
            "gen_cpu_pct": 100.0 * sum(r["cpu_s"] for r in results) / args.duration,
            "bwait_pct": 100.0 * bwait / args.duration,
            "gen_wait_pct": 100.0 * sum(r.get("wait_s", 0) for r in results) / args.duration,
            "sent": sent, "got": got, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
            "connect_s": max(r["connect_s"] for r in results),
            "errors": dict((k, v) for r in results for k, v in r["errors"].items())}


def run_proxy(args, n, cfg, transport, procs, loop):
    """One proxy (``loop``: its --loop, None: its default) holding n
    sessions over ``transport``: run_sessions' figures and its stop time."""
    with tempfile.TemporaryDirectory() as tmp:
        prof = os.path.join(tmp, "proxy.prof")
        runner = (profile_proxy.RUNNER, (prof, "1", "0", "0")) if args.profile else \
            (TRACE_RUNNER, (prof,)) if args.tracemalloc else None
        p = brokers.Proxy(tmp, secure=True, config=cfg, root=args.root, runner=runner, loop=loop)
        try:
            if args.tracemalloc:
                p.trace_path = prof
                time.sleep(1.0)   # start-up done: the baseline
                trace_snapshot(p.proc, prof, 0)
            r = run_sessions(p, "upsycle", n, args, transport, procs)
            if args.profile:
                for _ in range(300):   # written out after the dump (RUNNER)
                    if os.path.exists(prof + ".commits"):
                        break
                    time.sleep(0.1)
                print(profile_proxy.commit_summary(prof + ".commits"))
                print(profile_proxy.gc_summary(prof + ".commits"))
                profile_proxy.print_profile(prof, r["sent"], "%s, %d sessions, %s%s, %d published" % (
                    os.path.relpath(args.root), n, transport.upper(), " " + loop if loop else "", r["sent"]), 25)
            if args.tracemalloc:
                print_memory(prof, n, "%s, %d sessions, %s" % (os.path.relpath(args.root), n,
                                                                transport.upper()))
            t0 = time.perf_counter()
            try:
                p.stop()
            except subprocess.TimeoutExpired:
                p.proc.kill()   # a measured row is kept: the stop time is part of what it says
                p.proc.wait(60)
            r["stop_s"] = time.perf_counter() - t0
        finally:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(60)
    return r


def sessions_bench(args):
    ns = args.sessions or ((10, 100, 1000) if args.quick else (10, 1000, 10000))
    rows = []
    label = "" if os.path.abspath(args.root) == os.path.abspath(ROOT) else " (%s)" % os.path.relpath(args.root)
    if args.profile:
        label += " under cProfile"
    elif args.tracemalloc:
        label += " under tracemalloc"
    loops = args.loops or [None]
    for n in ns:
        procs = 1 if n <= 100 else 4
        total = max(4096, n + 100)
        cfg = SCALE_CONFIG % {"n": total, "per": total - 1, "subs": max(100000, n * (args.fanout + 1))}

        def upsycle(transport, loop, tag):
            def go():
                r = run_proxy(args, n, cfg, transport, procs, loop)
                name = "upsycle Noise/%s%s%s%s" % (transport.upper(), " " + loop if loop else "", label, tag)
                r["load"] = os.getloadavg()[0]
                rows.append(("%d" % n, name, r))
                print("%s sessions, %s: %s" % (n, name, r), flush=True)
            return go

        def mosquitto(tag):
            def go():
                with tempfile.TemporaryDirectory() as tmp:
                    m = brokers.Mosquitto(tmp, 32)
                    try:
                        r = run_sessions(m, "mqtt", n, args, "tcp", procs)
                    finally:
                        t0 = time.perf_counter()
                        m.stop()
                    r["stop_s"] = time.perf_counter() - t0
                r["load"] = os.getloadavg()[0]
                rows.append(("%d" % n, "mosquitto MQTT/TCP" + tag, r))
                print("%s sessions, mosquitto%s: %s" % (n, tag, r), flush=True)
            return go

        for k in range(args.rounds):
            # Round by round the order turns round (A B C, C B A, ...): a
            # neighbour's load rising over the run weighs on every system.
            tag = " r%d" % (k + 1) if args.rounds > 1 else ""
            order = [upsycle(t, lp, tag) for t in args.transports for lp in loops]
            if not args.no_anchor:
                order.append(mosquitto(tag))
            for go in (order if k % 2 == 0 else order[::-1]):
                go()
    out = []
    # each row's anchor: Mosquitto with as many sessions in the same round
    anchor = dict(((n, name.rsplit(" r", 1)[-1] if args.rounds > 1 else ""), r) for n, name, r in rows
                  if name.startswith("mosquitto"))
    for n, name, r in rows:
        m = anchor.get((n, name.rsplit(" r", 1)[-1] if args.rounds > 1 else ""))
        ratio = "%.2fx / %.2fx" % (r["p99"] / m["p99"], r["cpu_us_per_msg"] / m["cpu_us_per_msg"]) \
            if m and m["p99"] and m["cpu_us_per_msg"] else "-"
        out.append((n, name, r["rss_mb"], r["rss_per_session"], r["sent"], r["got"], r["cpu_us_per_msg"],
                    r["sys_share_pct"], "%.0f (%.0f)" % (r["loop_us"], r["loop_sys_us"]), r["bcpu_pct"], r["bwait_pct"], r["gen_cpu_pct"], r["gen_wait_pct"], r["p50"], r["p99"], ratio, r["connect_s"], r["stop_s"], r["load"],
                    ",".join("%s:%d" % kv for kv in sorted(r["errors"].items())) or "-"))
    print()
    print(table.render(
        "Sessions: each publishes at %g msg/s in aggregate, subscribed to %d others' topics, %.0f s measured" % (
            args.aggregate, args.fanout, args.duration),
        ("sessions", "system", "RSS MB", "RSS B/session", "published", "delivered", "broker CPU us/pub",
         "of it kernel %", "main thread us/pub (kernel)", "broker CPU %", "broker waiting for a CPU %", "loadgen CPU %", "loadgen waiting %", "p50 ms", "p99 ms", "p99, CPU/pub vs mosquitto", "connect s", "stop s", "load avg",
         "errors"),
        out))
    return rows


# -- handshakes -----------------------------------------------------------------

def handshake_bench(args):
    """Both sides of a Noise XX handshake on the host's backend (libsodium's
    X25519 and ChaCha20-Poly1305), its HMAC-SHA256 in C (hmac.digest, what the
    proxy and the host's clients run) against the anchor in the same run: the
    boards' pure-Python HMAC (crypto/hkdf.py) under the same backend. Rounds
    alternate; medians. What a proxy pays per connecting session, twice
    (it runs one side)."""
    sys.path[:0] = [os.path.join(ROOT, "host"), ROOT]
    from shared_protocol.crypto import api
    from shared_protocol.noise.handshake import Handshake
    from shared_protocol.session.secure_client import PROLOGUE
    from upsycle.crypto_nacl import NaclBackend

    class PureHmac(NaclBackend):
        hmac_sha256 = None   # api falls back to crypto/hkdf.py's

    si, sr = os.urandom(32), os.urandom(32)

    def pair():
        i = Handshake(True, si, os.urandom(32), PROLOGUE)
        r = Handshake(False, sr, os.urandom(32), PROLOGUE)
        r.read_message(i.write_message(b""))
        i.read_message(r.write_message(b""))
        r.read_message(i.write_message(b""))
        i.split()
        r.split()

    res = {"HMAC in C (host)": [], "HMAC in Python (boards' hkdf.py; anchor)": []}
    old = api.current_backend()
    c0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        for _ in range(5 if args.quick else 9):
            for name, backend in zip(res, (NaclBackend(), PureHmac())):
                api.use_backend(backend)
                t0 = time.perf_counter()
                for _ in range(100):
                    pair()
                res[name].append((time.perf_counter() - t0) / 100 * 1e3)
    finally:
        api.use_backend(old)
    anchor = statistics.median(res["HMAC in Python (boards' hkdf.py; anchor)"])
    rows = [(name, "%.2f" % statistics.median(v), "%.2fx" % (statistics.median(v) / anchor)) for name, v in res.items()]
    print()
    print(table.render("Noise XX handshake, both sides, one process (load average %.1f)" % os.getloadavg()[0],
                       ("HMAC-SHA256", "ms per handshake (median)", "vs anchor"), rows))
    return rows


# -- the store ----------------------------------------------------------------

def fill_store(data, n_msgs, n_topics, backlog, node, old_fraction=0.1):
    """Write the history through the proxy's Store (its transactions), with
    the oldest 10% of every topic stamped two days old (what the retention
    pass will find expired once max_age_s is a day)."""
    sys.path[:0] = [os.path.join(ROOT, "host"), ROOT]
    from upsycle.proxy.store import Retention, Store
    now = time.time()
    clock = [now]
    st = Store(data, Retention(max_count=0, max_age_s=0, max_bytes=0), max_topics=n_topics + 10,
               clock=lambda: clock[0])
    st.open()
    topics = [os.urandom(16) for _ in range(n_topics - 1)]
    per = (n_msgs - backlog) // len(topics)
    pad = os.urandom(PAYLOAD)
    t0 = time.perf_counter()
    import hashlib
    bl_topic = hashlib.sha256(b"backlog").digest()[:16]
    st._commit([("sub", node, bl_topic, None, None, node)], {}, False)
    seq = 0
    for phase in range(2):
        k = int(per * old_fraction) if phase == 0 else per - int(per * old_fraction)
        clock[0] = now - 2 * 86400 if phase == 0 else now
        batch = []
        for t in topics:
            for _ in range(k):
                seq += 1
                batch.append(("pub", t, seq.to_bytes(16, "big"), pad, None, None))
                if len(batch) >= 4096:
                    st._commit(batch, {}, False)
                    batch = []
        if phase == 1:
            for _ in range(backlog):
                seq += 1
                batch.append(("pub", bl_topic, seq.to_bytes(16, "big"), pad, None, None))
                if len(batch) >= 4096:
                    st._commit(batch, {}, False)
                    batch = []
        if batch:
            st._commit(batch, {}, False)
    fill_s = time.perf_counter() - t0
    st.close()
    return fill_s, per * len(topics) + backlog


def sweep(st):
    """One whole age sweep as the writer runs it: transactions until it says
    it is done. (seconds, transactions, longest transaction s, rows deleted)"""
    t0 = time.perf_counter()
    parts = []
    dropped = 0
    while True:
        t1 = time.perf_counter()
        res = st._commit([], {}, True)
        parts.append(time.perf_counter() - t1)
        dropped += sum(res["drops"].values())
        if not res.get("sweep_more"):
            break
    return time.perf_counter() - t0, len(parts), max(parts), dropped


def retention_pass(data, n_topics):
    """Age sweeps over every topic, as the store's writer runs them: nothing
    expired (max_age 30 days; the first sweep after start, then the next
    one), and 10% of each topic expired."""
    from upsycle.proxy.store import Retention, Store
    out = []
    st = Store(data, Retention(max_count=0, max_age_s=30 * 86400, max_bytes=0), max_topics=n_topics + 10)
    st.open()
    out.append(("nothing expired, first after start",) + sweep(st))
    out.append(("nothing expired, the next",) + sweep(st))
    st.close()
    st = Store(data, Retention(max_count=0, max_age_s=86400, max_bytes=0), max_topics=n_topics + 10)
    st.open()
    out.append(("10% of every topic expired",) + sweep(st))
    st.close()
    return out


def mosquitto_backlog(tmp, n):
    """A persistent MQTT session away while n QoS 1 messages queue for it,
    then back: seconds to receive them all (mosquitto_sub -c)."""
    m = brokers.Mosquitto(tmp, 128)
    pub_bin = brokers.need("mosquitto_pub", "mosquitto-clients")
    sub_bin = brokers.need("mosquitto_sub", "mosquitto-clients")
    try:
        subprocess.run([sub_bin, "-p", str(m.port), "-c", "-i", "away", "-q", "1", "-t", "backlog", "-E"],
                       check=True)
        line = b"x" * (PAYLOAD - 1) + b"\n"
        # mosquitto_pub -l (2.0.11) given 100,000 lines at once sent some
        # 34,500 and exited 0, so the backlog queued was a third of n and the
        # subscriber waited for the rest until the timeout: the anchor
        # looked 470x slower than it is. Chunks, each acknowledged in full
        # (-d prints every PUBACK), or the run stops.
        done = 0
        while done < n:
            k = min(BACKLOG_PUB_CHUNK, n - done)
            out = subprocess.run([pub_bin, "-p", str(m.port), "-q", "1", "-t", "backlog", "-l", "-M", "128", "-d"],
                                 input=line * k, stdout=subprocess.PIPE, check=True).stdout
            acked = out.count(b"received PUBACK")
            if acked != k:
                raise RuntimeError("mosquitto_pub: %d of %d publishes acknowledged" % (acked, k))
            done += k
        t0 = time.perf_counter()
        b0 = m.cpu()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            out = subprocess.run([sub_bin, "-p", str(m.port), "-c", "-i", "away", "-q", "1", "-t", "backlog",
                                  "-C", str(n)], stdout=subprocess.PIPE, check=True, timeout=BACKLOG_TIMEOUT_S).stdout
        except subprocess.TimeoutExpired as e:
            out = e.output or b""
        dt = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)   # the client, reaped (killed at a timeout)
        ccpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        return dt, out.count(b"\n"), m.cpu() - b0, ccpu
    finally:
        m.stop()


def store_bench(args):
    n_msgs, n_topics, backlog = (100000, 1000, 20000) if args.quick else (1000000, 10000, 100000)
    sys.path[:0] = [os.path.join(ROOT, "host"), ROOT]
    import loadgen
    salt = os.urandom(3).hex()
    node = loadgen.node_for("returning", salt.encode(), True)[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        fill_s, stored = fill_store(data, n_msgs, n_topics, backlog, node)
        size_mb = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data)) / 1e6
        rows.append(("fill through Store (not a target)", "%.1f s" % fill_s, "%d messages, %d topics, %.0f MB" % (
            stored, n_topics, size_mb)))
        cfg = """
[retention]
max_count = 0
max_age_s = 0
max_bytes = 0
[limits]
subscriber_queue = 0
max_topics = %d
""" % (n_topics + 10)
        # After a clean stop the store skips its scan of every page for
        # damage (the file is as it left it); after SIGKILL it runs it.
        starts, crashed = [], []
        for _ in range(3):
            p = brokers.Proxy(tmp, secure=True, config=cfg, data=data)
            starts.append(p.start_s)
            rss = p.rss_kb()
            p.proc.kill()
            p.proc.wait(60)
            p = brokers.Proxy(tmp, secure=True, config=cfg, data=data)
            crashed.append(p.start_s)
            p.stop()
        bare = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as empty:
                p = brokers.Proxy(empty, secure=True, config=cfg)
                bare.append(p.start_s)
                p.stop()
        rows.append(("proxy start-up after a clean stop (process start -> listening)",
                     "%.2f s" % statistics.median(starts), "median of 3; RSS after start %.0f MB" % (rss / 1024.0)))
        rows.append(("proxy start-up after SIGKILL (integrity scan of every page)",
                     "%.2f s" % statistics.median(crashed), "median of 3"))
        rows.append(("proxy start-up on an empty data directory (anchor)", "%.2f s" % statistics.median(bare),
                     "median of 3: Python, imports, key, listening"))
        for label, dt, parts, longest, dropped in retention_pass(data, n_topics):
            rows.append(("retention pass: " + label, "%.3f s" % dt, "%d topics, %d rows deleted; %d transaction%s, "
                         "longest %.3f s" % (n_topics, dropped, parts, "" if parts == 1 else "s", longest)))
        p = brokers.Proxy(tmp, secure=True, config=cfg, data=data)
        try:
            spec = {"proto": "upsycle", "transport": "tcp", "secure": True, "host": "127.0.0.1", "port": p.port,
                    "window": 128, "payload": PAYLOAD, "salt": salt, "timeout_s": 600,
                    "sessions": [["returning", None, None, 0, 0, ["backlog"], backlog]], "subscribe_on_go": True}
            c0 = p.cpu()
            results, t_go = brokers.run_loadgens([spec], timeout=900)
            bcpu = p.cpu() - c0
            r = results[0]
            dt = r["t_last"] - t_go
            ours = r["got"] / dt
            rows.append(("backlog to a returning subscriber (Noise TCP)", "%.0f msg/s" % ours,
                         "%d messages in %.2f s; proxy CPU %.1f us/msg, client %.1f us/msg" % (
                             r["got"], dt, 1e6 * bcpu / max(1, r["got"]), 1e6 * r["cpu_s"] / max(1, r["got"]))))
        finally:
            p.stop()
    with tempfile.TemporaryDirectory() as tmp:
        dt, got, bcpu, ccpu = mosquitto_backlog(tmp, backlog)
        rows.append(("mosquitto: same backlog to a persistent session (C client)", "%.0f msg/s" % (got / dt),
                     "%d of %d messages in %.2f s%s (held in memory; persistence on); broker CPU %.1f us/msg, "
                     "client %.1f us/msg; upsycle / mosquitto %.2fx" % (
                         got, backlog, dt, "" if got == backlog else ", then stopped waiting",
                         1e6 * bcpu / max(1, got), 1e6 * ccpu / max(1, got), ours * dt / max(1, got))))
    print()
    print(table.render("Store: %d messages over %d topics" % (n_msgs, n_topics), ("measure", "value", "detail"), rows))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("sessions", "store", "handshake"))
    ap.add_argument("--aggregate", type=float, default=1000.0, help="msg/s published by all sessions together")
    ap.add_argument("--fanout", type=int, default=3, help="topics each session subscribes to")
    ap.add_argument("--sessions", type=int, nargs="+", help="session counts to run (default 10 1000 10000)")
    ap.add_argument("--transports", nargs="+", choices=("udp", "tcp"), default=("udp", "tcp"),
                    help="our proxy's transports to run (Mosquitto runs TCP either way)")
    ap.add_argument("--duration", type=float, default=0, help="measured seconds per run (default 20, quick 5)")
    ap.add_argument("--root", default=ROOT, help="checkout whose proxy to run (another commit, unpacked with "
                    "git archive, for a before/after comparison in one sitting)")
    ap.add_argument("--profile", action="store_true", help="run the proxy under cProfile (profile_proxy.py) "
                    "from all sessions ready to the last report, and print where its event loop's time went")
    ap.add_argument("--tracemalloc", action="store_true", help="run the proxy under tracemalloc and print its "
                    "bytes per session by allocation site (sessions connected and subscribed, less start-up)")
    ap.add_argument("--no-anchor", action="store_true", help="leave Mosquitto out (profiling runs)")
    ap.add_argument("--loops", nargs="+", choices=("asyncio", "uvloop"),
                    help="run our proxy once per event loop named (its --loop); default: its own choice")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per session count, the systems' order "
                    "turning round each round (A B C, C B A, ...)")
    args = ap.parse_args()
    args.duration = args.duration or (5.0 if args.quick else 20.0)
    print("open files allowed: %d" % raise_fd_limit())
    if args.only in (None, "handshake"):
        handshake_bench(args)
    if args.only in (None, "sessions"):
        sessions_bench(args)
    if args.only in (None, "store"):
        store_bench(args)


if __name__ == "__main__":
    main()
