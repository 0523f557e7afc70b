"""Where the proxy's time goes per message: cProfile of its event loop under load.

    .venv/bin/python tools/bench/profile_proxy.py [--pairs 10] [--messages 20000] [--secure] [--root DIR]

Starts ``upsycle proxy`` under cProfile (its event-loop thread; the store's
writer thread runs SQLite, mostly without the GIL), drives it with loadgen.py
processes (``--pairs`` publisher/subscriber pairs, 64-byte payloads, window
128), stops it with SIGTERM and prints the event loop's own time per
delivered message, by area (codec, framing, Noise, session, server, store,
asyncio and sockets) and the top functions. ``--root`` runs the proxy from
another checkout (e.g. an older commit unpacked with ``git archive``) with
this checkout's load generators, for a before/after comparison in one sitting.
"""
import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brokers  # noqa: E402
import table  # noqa: E402
from bench_proxy import pair_specs  # noqa: E402

AREAS = (
    ("idle (waiting in epoll)", ("<method 'poll' of 'select.epoll'",)),
    ("Noise / crypto", ("noise", "crypto", "nacl", "symmetric")),
    ("codec (CBOR, envelope)", ("session_wire", "messages.py", "wire_fast", "cbor", "envelope")),
    ("framing", ("framing",)),
    ("session state machine", ("session_proxy", "session/proxy.py")),
    ("store (event-loop side)", ("store.py", "store_tail.py")),
    ("server (routing, pump, flush)", ("server.py", "links.py", "admission.py", "routing.py", "delivery.py",
                                       "fastpath")),
    ("asyncio, sockets, selectors", ("asyncio", "selectors", "socket", "<method 'send'", "<method 'recv'",
                                     "<method 'write'", "<method 'sendto'")),
)


def area(key):
    text = "%s:%s" % (key[0], key[2])
    for name, needles in AREAS:
        if any(n in text for n in needles):
            return name
    return "other (start-up imports, logging, builtins)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--secure", action="store_true")
    ap.add_argument("--root", default=brokers.ROOT, help="checkout whose proxy to profile")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-profile", action="store_true",
                    help="no cProfile: only the proxy's CPU per message (the store thread included) and msg/s")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "proxy.prof")
        port = brokers.free_port()
        env = dict(os.environ, PYTHONPATH=os.path.join(root, "host") + os.pathsep + root,
                   UPSYCLE_HOME=os.path.join(tmp, "home"))
        prof = [] if args.no_profile else ["-m", "cProfile", "-o", out]
        cmd = [sys.executable] + prof + ["-m", "upsycle", "proxy", "--data",
               os.path.join(tmp, "data"), "--listen", "127.0.0.1:%d" % port]
        if not args.secure:
            cmd.append("--insecure")
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            brokers.wait_port(port)
            per = args.messages // args.pairs
            specs = pair_specs("upsycle", port, args.pairs, per, 128, 4 if args.pairs > 1 else 2, 0,
                               args.secure, salt=os.urandom(3).hex())
            c0 = brokers.proc_cpu(proc.pid)
            t0 = time.time()
            results, t_go = brokers.run_loadgens(specs)
            cpu = brokers.proc_cpu(proc.pid) - c0
            rate = sum(r["got"] for r in results) / (max(r["t_last"] for r in results) - t_go)
        finally:
            proc.terminate()
            proc.wait(60)
        if args.no_profile:
            print("%s: %s %d -> %d, %d messages: %.0f msg/s, proxy CPU %.1f us/msg (event loop and store thread)" % (
                os.path.relpath(root), "Noise" if args.secure else "plaintext", args.pairs, args.pairs,
                args.messages, rate, 1e6 * cpu / args.messages))
            return
        st = pstats.Stats(out)
    n = args.messages
    by_area = {}
    total = 0.0
    for key, (cc, nc, tt, ct, callers) in st.stats.items():
        a = area(key)
        by_area[a] = by_area.get(a, 0.0) + tt
        if not a.startswith("idle"):
            total += tt
    rows = [(a, 1e6 * t / n, "-" if a.startswith("idle") else "%.1f" % (100.0 * t / total))
            for a, t in sorted(by_area.items(), key=lambda x: -x[1])]
    print(table.render("Proxy event loop, own time per delivered message (%s, %d -> %d, %d messages, %s; "
                       "%.0f msg/s, proxy CPU %.1f us/msg incl. the store thread; profiler overhead included)" % (
                           os.path.relpath(root), args.pairs, args.pairs, n,
                           "Noise" if args.secure else "plaintext", rate, 1e6 * cpu / n),
                       ("area", "us/msg", "% of busy loop"), rows))
    top = sorted((kv for kv in st.stats.items() if not area(kv[0]).startswith("idle")),
                 key=lambda kv: -kv[1][2])[:args.top]
    print()
    print(table.render("Top functions by own time", ("function", "calls", "us/msg", "area"),
                       [("%s:%d %s" % (os.path.basename(k[0]), k[1], k[2]), v[1], 1e6 * v[2] / n, area(k))
                        for k, v in top]))


if __name__ == "__main__":
    main()
