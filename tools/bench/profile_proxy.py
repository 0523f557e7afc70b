"""Where the proxy's time goes per message: cProfile of its event loop under load.

    .venv/bin/python tools/bench/profile_proxy.py [--pairs 10] [--messages 20000] [--rate R] [--secure]
        [--no-profile] [--root DIR] [--batch-max N] [--sync-off-loop]

Starts ``upsycle proxy`` with a profiler that is switched on (SIGUSR1) once
the load generators are connected and off again (SIGUSR2) after the last
delivery, so start-up and shutdown are not in the figures; drives it with
loadgen.py processes (``--pairs`` publisher/subscriber pairs, 64-byte
payloads, window 128), and prints the event loop's own time per delivered
message, by area (codec, framing, Noise, session, server, store, asyncio and
sockets), the top functions, and the CPU of each of the proxy's threads over
the run (the event loop, the store's writer, the checkpointer: cProfile sees
only the event loop's), publish -> delivery latency, and the store's commits
over the run (items, wall and CPU time, statements, time in the WAL sync and
outside it). ``--batch-max N``: commits of at most N items (to compare
commit sizes under one window). ``--sync-off-loop``: the store's
SYNC_OFF_LOOP mode (commits in the event loop, the WAL synced in a thread of
its own; off by default). ``--rate``: publishers send at that aggregate rate (latency at a
load short of saturation). ``--root`` runs the proxy from another checkout (e.g.
an older commit unpacked with ``git archive``) with this checkout's load
generators, for a before/after comparison in one sitting.
"""
import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brokers  # noqa: E402
import table  # noqa: E402
from bench_proxy import _pct, pair_specs  # noqa: E402

AREAS = (
    ("idle (waiting in epoll)", ("<method 'poll' of 'select.epoll'",)),
    ("Noise / crypto", ("noise", "crypto", "nacl", "symmetric")),
    ("codec (CBOR, envelope)", ("session_wire", "messages.py", "wire_fast", "cbor", "envelope")),
    ("framing", ("framing",)),
    ("session state machine", ("session_proxy", "session/proxy.py")),
    ("store (event-loop side)", ("store.py", "store_tail.py")),
    ("federation hooks", ("federation.py", "peers.py", "catchup.py")),
    ("overlay (PolderCast gossip, rings)", ("overlay/",)),
    ("server (routing, pump, flush)", ("server.py", "links.py", "admission.py", "routing.py", "delivery.py",
                                       "fastpath")),
    ("asyncio, sockets, selectors", ("asyncio", "selectors", "socket", "<method 'send'", "<method 'recv'",
                                     "<method 'write'", "<method 'sendto'")),
)


# Runs the proxy's command line with a profiler that SIGUSR1 switches on and
# SIGUSR2 switches off and writes out (argv[1]: the output file).
# The store's commits are timed the same way (from SIGUSR1 to SIGUSR2):
# items, wall and CPU time of each, and its statements (the COMMIT, which
# syncs the WAL, and the others), written to argv[1] + ".commits" as JSON.
RUNNER = """
import cProfile, json, signal, sys, time
out = sys.argv[1]
prof = cProfile.Profile() if sys.argv[2] == "1" else None
from upsycle.proxy import store, store_tx
if sys.argv[3] != "0":   # --batch-max: a commit takes at most this many items
    store_tx.BATCH_MAX = int(sys.argv[3])
if sys.argv[4] == "1":   # --sync-off-loop: commits in the loop, the WAL synced in a thread (store_sync.py)
    store.SYNC_OFF_LOOP = True
rec = {"on": False, "commits": [], "commit_s": 0.0, "other_s": 0.0, "statements": 0, "handback": []}
commit = store_tx.Transactions._commit
def timed_commit(self, batch, *a, **k):
    t0, c0 = time.perf_counter(), time.thread_time()
    s0 = rec["commit_s"]
    r = commit(self, batch, *a, **k)
    if rec["on"]:
        t1 = time.perf_counter()
        r["_t_done"] = t1
        rec["commits"].append((len(batch), t1 - t0, time.thread_time() - c0, rec["commit_s"] - s0, t0, t1))
    return r
store_tx.Transactions._commit = timed_commit
# WAL checkpoints (the checkpoint thread's and the writer's): when they ran.
checkpoint = store_tx.Transactions._checkpoint
def timed_checkpoint(self, conn):
    t0 = time.perf_counter()
    try:
        return checkpoint(self, conn)
    finally:
        if rec["on"]:
            rec.setdefault("ckpt", []).append((t0, time.perf_counter()))
store_tx.Transactions._checkpoint = timed_checkpoint
# From the end of a commit in the writer to its results being handled in
# the event loop (a thread hand-over: call_soon_threadsafe, the loop's
# wake-up and the GIL).
finish = store.Store._finish
def timed_finish(self, batch, results):
    t = results.pop("_t_done", None)
    if t is not None and rec["on"]:
        rec["handback"].append(time.perf_counter() - t)
    return finish(self, batch, results)
store.Store._finish = timed_finish
# Where a message's latency goes: the load generators stamp each payload
# with the wall clock in ns (loadgen.py, ">Q" first), so the proxy can tell
# publisher -> proxy (when the publish is queued for the store) and
# publisher -> handed to the subscriber's session (deliver_run) apart from
# the subscriber's own share (every 16th message).
import struct
from upsycle.proxy import fastpath
stamp = struct.Struct(">Q").unpack_from
submit = store.Store.submit_publish
def timed_submit(self, topic, msg_id, payload, *a, **k):
    if rec["on"] and len(payload) >= 8 and msg_id[-1] & 15 == 0:
        rec.setdefault("arrive", []).append(time.time_ns() - stamp(payload)[0])
    return submit(self, topic, msg_id, payload, *a, **k)
store.Store.submit_publish = timed_submit
deliver_run = fastpath.HostProxySession.deliver_run
def timed_deliver_run(self, topic, rows, now):
    if rec["on"]:
        t = time.time_ns()
        out = rec.setdefault("handed", [])
        for r in rows:
            if r[1][-1] & 15 == 0 and len(r[2]) >= 8:
                out.append(t - stamp(r[2])[0])
    return deliver_run(self, topic, rows, now)
fastpath.HostProxySession.deliver_run = timed_deliver_run
class TimedDb:
    def __init__(self, db):
        self._db = db
    def execute(self, sql, *a):
        t0 = time.perf_counter()
        r = self._db.execute(sql, *a)
        if rec["on"]:
            rec["statements"] += 1
            rec["commit_s" if sql == "COMMIT" else "other_s"] += time.perf_counter() - t0
        return r
    def __getattr__(self, name):
        return getattr(self._db, name)
start = store.Store.start
def timed_start(self, loop, on_commit):
    self._db = TimedDb(self._db)
    r = start(self, loop, on_commit)
    ws = getattr(self, "_sync", None)
    if ws is not None:   # the WAL sync thread (store_sync.py): when each sync ran
        fsync = ws.fsync
        def timed_fsync(fd):
            t0 = time.perf_counter()
            fsync(fd)
            if rec["on"]:
                rec.setdefault("syncs", []).append((t0, time.perf_counter()))
        ws.fsync = timed_fsync
    return r
store.Store.start = timed_start
if hasattr(store.Store, "_synced"):
    # From the end of a sync to its commits' results in the event loop.
    synced = store.Store._synced
    def timed_synced(self, upto, error):
        if rec["on"]:
            rec.setdefault("synced_at", []).append(time.perf_counter())
        return synced(self, upto, error)
    store.Store._synced = timed_synced
import gc
rec["gc"] = {}
gc_t0 = [0.0]
def gc_timed(phase, info):
    # the cyclic collector's pauses, per generation (cProfile does not see them)
    if phase == "start":
        gc_t0[0] = time.perf_counter()
    elif rec["on"]:
        g = rec["gc"].setdefault(str(info["generation"]), [0, 0.0, 0.0])
        dt = time.perf_counter() - gc_t0[0]
        g[0] += 1
        g[1] += dt
        g[2] = max(g[2], dt)
gc.callbacks.append(gc_timed)
def on(*a):
    rec["on"] = True
    if prof is not None:
        prof.enable()
def off(*a):
    rec["on"] = False
    if prof is not None:
        prof.disable()
        prof.dump_stats(out)
    with open(out + ".commits", "w") as f:
        json.dump(rec, f)
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
sys.argv = ["upsycle"] + sys.argv[5:]
from upsycle.cli import main
sys.exit(main())
"""


def commit_summary(path):
    """One line on the store's commits over the run (see RUNNER)."""
    import json
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return "store commits: not recorded"
    cs = [c for c in rec["commits"] if c[0]]
    if not cs:
        return "store commits: none with items"
    items = sum(c[0] for c in cs)
    wall = sorted(c[1] for c in cs)
    cpu = sorted(c[2] for c in cs)
    sync = sorted(c[3] for c in cs if len(c) > 3)
    hb = sorted(rec.get("handback", ()))
    return ("store commits: %d holding %d items (mean %.0f); wall per commit p50 %.1f ms, p90 %.1f ms, max %.1f ms; "
            "writer CPU per commit p50 %.1f ms; WAL sync per commit p50 %.1f ms, p90 %.1f ms; %.1f statements per "
            "commit; of the writer's %.2f s in commits, %.2f s in COMMIT (the WAL sync) and %.2f s in the other "
            "statements\nresults handed back to the event loop p50 %.2f ms, p90 %.2f ms, max %.1f ms" % (
                len(cs), items, items / len(cs), 1e3 * wall[len(wall) // 2], 1e3 * wall[int(len(wall) * 0.9)],
                1e3 * wall[-1], 1e3 * cpu[len(cpu) // 2], 1e3 * _q(sync, 0.5), 1e3 * _q(sync, 0.9),
                rec["statements"] / len(cs), sum(wall), rec["commit_s"], rec["other_s"],
                1e3 * _q(hb, 0.5), 1e3 * _q(hb, 0.9), 1e3 * _q(hb, 1.0))) + _stages(rec)


def _stages(rec):
    """Publisher -> proxy and publisher -> handed to the subscriber's
    session, p50/p99 (every 16th message; see RUNNER)."""
    out = ""
    seq = [c for c in rec["commits"] if len(c) > 5]
    gaps = sorted(b[4] - a[5] for a, b in zip(seq, seq[1:]))
    if gaps:
        # In 1 -> 1 the whole window rides in one commit: the writer then
        # waits for the acknowledgements to reach the publisher and its
        # next window to come back (the refill round trip).
        out += "\nwriter idle between commits p50 %.2f ms, p90 %.2f ms; %.0f%% of the run" % (
            1e3 * _q(gaps, 0.5), 1e3 * _q(gaps, 0.9), 100.0 * sum(gaps) / max(1e-9, seq[-1][5] - seq[0][4]))
    ck = rec.get("ckpt", [])
    cs = [c for c in rec["commits"] if c[0] and len(c) > 5]
    if ck and cs:
        over = sorted(c[1] for c in cs if any(a < c[5] and c[4] < b for a, b in ck))
        rest = sorted(c[1] for c in cs if not any(a < c[5] and c[4] < b for a, b in ck))
        out += ("\nWAL checkpoints: %d, %.0f ms in all, longest %.0f ms; commits during one: %d, wall p50 %.1f ms "
                "(the others: p50 %.1f ms, p90 %.1f ms)" % (
                    len(ck), 1e3 * sum(b - a for a, b in ck), 1e3 * max(b - a for a, b in ck), len(over),
                    1e3 * _q(over, 0.5), 1e3 * _q(rest, 0.5), 1e3 * _q(rest, 0.9)))
    sy = rec.get("syncs", [])
    if sy and seq:
        # The WAL sync thread (store_sync.py): a commit's results wait for
        # the first sync that starts after it is written.
        starts = [a for a, b in sy]
        import bisect
        waits = sorted(starts[i] - c[5] for c in seq for i in [bisect.bisect_left(starts, c[5])] if i < len(starts))
        dur = sorted(b - a for a, b in sy)
        back = sorted(x - b for (a, b), x in zip(sy, rec.get("synced_at", [])) if x >= b)
        out += ("\nWAL sync thread: %d syncs for %d commits; commit written -> its sync starts p50 %.2f ms, p90 %.2f "
                "ms; fdatasync p50 %.2f ms, p90 %.2f ms; sync done -> results in the loop p50 %.2f ms, p90 %.2f ms" % (
                    len(sy), len(seq), 1e3 * _q(waits, 0.5), 1e3 * _q(waits, 0.9), 1e3 * _q(dur, 0.5),
                    1e3 * _q(dur, 0.9), 1e3 * _q(back, 0.5), 1e3 * _q(back, 0.9)))
    for key, what in (("arrive", "publisher -> queued for the store"),
                      ("handed", "publisher -> handed to the subscriber's session")):
        xs = sorted(rec.get(key, ()))
        if xs:
            out += "\n%s: p50 %.1f ms, p99 %.1f ms" % (what, _q(xs, 0.5) / 1e6, _q(xs, 0.99) / 1e6)
    return out


def _q(xs, q):
    """The q quantile of sorted xs (0 if empty)."""
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0


def gc_summary(path):
    """One line on the cyclic collector's pauses over the run (see RUNNER)."""
    import json
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return "collector pauses: not recorded"
    parts = ["generation %s: %d, %.3f s in all, longest %.1f ms" % (g, v[0], v[1], 1e3 * v[2])
             for g, v in sorted(rec.get("gc", {}).items())]
    return "collector pauses: " + ("; ".join(parts) or "none")


def thread_cpu(pid, kernel_only=False):
    """{thread id: CPU seconds} of a live process's threads (/proc); with
    kernel_only, system time alone (its syscalls: sends, receives, epoll,
    fsync)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[12]) + (0 if kernel_only else int(fields[11]))) / brokers.CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
    return out


def thread_waits(pid):
    """{thread id: seconds it was runnable but waiting for a CPU} (Linux
    schedstat): what the machine, not the GIL or the disk, held it back."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[int(tid)] = int(f.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
    return out


def area(key):
    text = "%s:%s" % (key[0], key[2])
    for name, needles in AREAS:
        if any(n in text for n in needles):
            return name
    return "other (builtins, logging)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--secure", action="store_true")
    ap.add_argument("--root", default=brokers.ROOT, help="checkout whose proxy to profile")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--rate", type=float, default=0,
                    help="aggregate msg/s the publishers send at (default 0: as fast as the window allows)")
    ap.add_argument("--batch-max", type=int, default=0,
                    help="items per commit at most (the store's BATCH_MAX; default 0: as it is), to compare commit "
                         "sizes under one window")
    ap.add_argument("--sync-off-loop", action="store_true",
                    help="the store commits in the event loop with NORMAL and syncs the WAL in a thread "
                         "(store.SYNC_OFF_LOOP, off by default)")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"),
                    help="the proxy's event loop (its --loop); default: its own choice")
    ap.add_argument("--save-profile", metavar="PATH",
                    help="keep the event loop's cProfile dump at PATH (pstats: callers, callees)")
    ap.add_argument("--no-profile", action="store_true",
                    help="no cProfile: only the proxy's CPU per message (the store thread included) and msg/s")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "proxy.prof")
        port = brokers.free_port()
        env = dict(os.environ, PYTHONPATH=os.path.join(root, "host") + os.pathsep + root,
                   UPSYCLE_HOME=os.path.join(tmp, "home"))
        cmd = [sys.executable, "-c", RUNNER, out, "0" if args.no_profile else "1", str(args.batch_max),
               "1" if args.sync_off_loop else "0",
               "proxy", "--data",
               os.path.join(tmp, "data"), "--listen", "127.0.0.1:%d" % port]
        if not args.secure:
            cmd.append("--insecure")
        if args.loop:
            cmd += ["--loop", args.loop]
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            brokers.wait_port(port)
            per = args.messages // args.pairs
            specs = pair_specs("upsycle", port, args.pairs, per, 128, 4 if args.pairs > 1 else 2,
                               args.rate / args.pairs, args.secure, salt=os.urandom(3).hex())
            t0 = {}
            w0 = {}
            c0 = [0.0]

            def go():
                proc.send_signal(signal.SIGUSR1)
                time.sleep(0.05)
                t0.update(thread_cpu(proc.pid))
                w0.update(thread_waits(proc.pid))
                c0[0] = brokers.proc_cpu(proc.pid)

            results, t_go = brokers.run_loadgens(specs, on_ready=go)
            cpu = brokers.proc_cpu(proc.pid) - c0[0]
            t1 = thread_cpu(proc.pid)
            w1 = thread_waits(proc.pid)
            proc.send_signal(signal.SIGUSR2)
            time.sleep(0.5)
            rate = sum(r["got"] for r in results) / (max(r["t_last"] for r in results) - t_go)
            threads = sorted(((tid, t1[tid] - t0.get(tid, 0.0), w1.get(tid, 0.0) - w0.get(tid, 0.0)) for tid in t1),
                             key=lambda x: -x[1])
            gen_cpu = sum(r["cpu_s"] for r in results)
            lat = [x for r in results for x in r["lat_us"]]
        finally:
            proc.terminate()
            proc.wait(60)
        n = args.messages
        print(table.render("Proxy CPU per message by thread over the run (%s, %s %d -> %d, %d messages, %.0f msg/s; "
                           "load generators %.1f us/msg; event loop %s; load average %.1f)" % (
                               os.path.relpath(root), "Noise" if args.secure else "plaintext", args.pairs,
                               args.pairs, n, rate, 1e6 * gen_cpu / n, args.loop or "default",
                               os.getloadavg()[0]),
                           ("thread", "CPU s", "us/msg", "waiting for a CPU s"),
                           [("event loop" if tid == proc.pid else "thread %d (store writer, checkpoints)" % tid,
                             c, 1e6 * c / n, w) for tid, c, w in threads if c > 0 or tid == proc.pid] +
                           [("whole process", cpu, 1e6 * cpu / n, sum(t[2] for t in threads))]))
        print("publish -> delivery p50 %.1f ms, p99 %.1f ms (%s)" % (
            _pct(lat, 0.5), _pct(lat, 0.99), "at %.0f msg/s offered" % args.rate if args.rate else
            "flat out: only window / throughput"))
        print(commit_summary(out + ".commits"))
        print(gc_summary(out + ".commits"))
        print()
        if args.no_profile:
            return
        if args.save_profile:
            shutil.copyfile(out, args.save_profile)
        print_profile(out, n, "%s, %d -> %d, %d messages, %s" % (
            os.path.relpath(root), args.pairs, args.pairs, n, "Noise" if args.secure else "plaintext"), args.top)


def print_profile(path, n, label, top_n=15):
    """The event loop's own time per message by area, and the top
    functions, from a cProfile dump (RUNNER's)."""
    st = pstats.Stats(path)
    by_area = {}
    total = 0.0
    for key, (cc, nc, tt, ct, callers) in st.stats.items():
        a = area(key)
        by_area[a] = by_area.get(a, 0.0) + tt
        if not a.startswith("idle"):
            total += tt
    rows = [(a, 1e6 * t / n, "-" if a.startswith("idle") else "%.1f" % (100.0 * t / total))
            for a, t in sorted(by_area.items(), key=lambda x: -x[1])]
    print(table.render("Proxy event loop under cProfile, own time per message (%s; profiler overhead included)"
                       % label, ("area", "us/msg", "% of busy loop"), rows))
    top = sorted((kv for kv in st.stats.items() if not area(kv[0]).startswith("idle")),
                 key=lambda kv: -kv[1][2])[:top_n]
    print()
    print(table.render("Top functions by own time", ("function", "calls", "us/msg", "area"),
                       [("%s:%d %s" % (os.path.basename(k[0]), k[1], k[2]), v[1], 1e6 * v[2] / n, area(k))
                        for k, v in top]))
    cum = sorted((kv for kv in st.stats.items() if not area(kv[0]).startswith("idle")),
                 key=lambda kv: -kv[1][3])[:top_n]
    print()
    print(table.render("Top functions by cumulative time", ("function", "calls", "us/msg", "area"),
                       [("%s:%d %s" % (os.path.basename(k[0]), k[1], k[2]), v[1], 1e6 * v[3] / n, area(k))
                        for k, v in cum]))


if __name__ == "__main__":
    main()
