"""Benchmarks of CYCLON and its simulator, printed as a table.

    PYTHONPATH=host:. /tmp/v/bin/python tools/bench/bench_cyclon.py [--nodes 10000] [--rounds 100]

1. Simulator: N nodes x R rounds with per-round metrics (the CLI's run: two
   processes, the second measuring), wall time, protocol time and peak memory
   (max RSS of the run, in a child process so nothing else counts). Anchor:
   the same run's protocol time per shuffle against the CPython shuffle cost
   of row 3 (how much the simulator adds around the protocol).
2. Message objects against bytes: a few rounds at N nodes with every
   message encoded and parsed (wire_sample = 1) against the default (1%),
   as a ratio: the reason the simulator samples the wire path.
3. One shuffle (initiate + respond + merge, encoded to bytes and parsed), on
   CPython and in the MicroPython VM, same code and same workload; ratio.
4. Retained heap of a board-sized CYCLON state in the VM: gc.mem_alloc()
   after a collection with control returned to JS, before and after
   building the node (each step is its own runPython call).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "host"), os.path.dirname(os.path.abspath(__file__))]

from table import render  # noqa: E402

# The shuffle workload, identical on both interpreters: a population of
# POP nodes with full views; each step one node initiates, the message goes
# through bytes to its peer, the reply back through bytes.
SHUFFLE_CODE = """
import time
from shared_protocol.overlay import cyclon
from shared_protocol.rand import Rng
POP = 40
def clock_us():
    if hasattr(time, "ticks_us"):
        return time.ticks_us()
    return int(time.perf_counter() * 1e6)
def run(c, l, steps, idlen):
    ids = []
    for i in range(POP):
        s = ("%d" % i).encode()
        ids.append(b"n" * (idlen - len(s)) + s)
    addr = b"\\x0a\\x00\\x00\\x01\\x1f\\x90"
    nodes = [cyclon.Cyclon(ids[i], addr, Rng(i + 1), c, l, 10**9) for i in range(POP)]
    by = {}
    for i in range(POP):
        by[ids[i]] = nodes[i]
        for k in range(1, c + 1):
            nodes[i].add_seed(ids[(i + k) % POP], addr)
    size = 0
    t0 = clock_us()
    for s in range(steps):
        p = nodes[s % POP]
        out = p.tick(s)
        d = out.data()
        rep = by[out.peer_id].receive(d, s)
        d2 = rep.data()
        p.receive(d2, s)
        size += len(d) + len(d2)
    t1 = clock_us()
    us = time.ticks_diff(t1, t0) if hasattr(time, "ticks_diff") else t1 - t0
    return us / steps, size / steps
for name, c, l, idlen, steps in CASES:
    run(c, l, 20, idlen)    # warm-up: the VM heap grows on first use
    us, b = run(c, l, steps, idlen)
    print("SHUFFLE %s %.1f %.0f" % (name, us, b))
"""

CASES = [("board c=8 l=4 (8-byte ids)", 8, 4, 8), ("proxy c=20 l=8 (32-byte ids)", 20, 8, 32)]

HEAP_STEPS = [
    "import gc\nfrom shared_protocol.overlay import cyclon\nfrom shared_protocol.rand import Rng\ngc.collect()",
    "import gc\ngc.collect()\nprint('HEAP0', gc.mem_alloc())",
    # a board's CYCLON state: the node, a full view, one exchange in flight
    """import gc
ADDR = b"\\x0a\\x00\\x00\\x01\\x1f\\x90"
node = cyclon.Cyclon(b"board-00", ADDR, Rng(1), cyclon.BOARD_VIEW, cyclon.BOARD_SHUFFLE)
for i in range(1, cyclon.BOARD_VIEW + 1):
    node.add_seed(("board-%02d" % i).encode(), bytes((10, 0, 0, i, 0x1f, 0x90)))
out = node.tick(0)
out = None
gc.collect()""",
    "import gc\ngc.collect()\nprint('HEAP1', gc.mem_alloc(), len(node), node.pending())",
    # the same with 32-byte ids (public keys) and the proxy view size
    """import gc
node2 = cyclon.Cyclon(b"k" * 32, b"\\x0a\\x00\\x00\\x01\\x1f\\x90", Rng(2), cyclon.PROXY_VIEW, cyclon.PROXY_SHUFFLE)
for i in range(1, cyclon.PROXY_VIEW + 1):
    node2.add_seed(bytes([i]) * 32, bytes((10, 0, 0, i, 0x1f, 0x90)))
out = node2.tick(0)
out = None
gc.collect()""",
    "import gc\ngc.collect()\nprint('HEAP2', gc.mem_alloc(), len(node2), node2.pending())",
]

HEAP_IMPORT_STEPS = [
    "import gc\ngc.collect()",
    "import gc\ngc.collect()\nprint('HEAPA', gc.mem_alloc())",
    "from shared_protocol.wire import envelope, framing, cbor\nfrom shared_protocol.rand import Rng\nimport gc\ngc.collect()",
    "import gc\ngc.collect()\nprint('HEAPB', gc.mem_alloc())",
    "from shared_protocol.overlay import cyclon\nimport gc\ngc.collect()",
    "import gc\ngc.collect()\nprint('HEAPC', gc.mem_alloc())",
]


def shuffle_source(steps):
    cases = [(n, c, l, idl, steps) for n, c, l, idl in CASES]
    return "CASES = %r\n" % (cases,) + SHUFFLE_CODE


def cpython_shuffle(steps):
    code = shuffle_source(steps).replace("print(", "_out.append(")
    g = {"_out": []}
    exec(compile(code, "<shuffle>", "exec"), g)
    res = {}
    for line in g["_out"]:
        parts = line.split()
        res[" ".join(parts[1:-2])] = (float(parts[-2]), float(parts[-1]))
    return res


def vm_run(steps):
    from upsycle import vm
    proc = vm.run(steps, timeout=600)
    if proc.returncode != 0:
        raise SystemExit("VM failed:\n%s\n%s" % (proc.stdout, proc.stderr))
    return proc.stdout


def vm_shuffle(steps):
    out = vm_run([shuffle_source(steps)])
    res = {}
    for line in out.splitlines():
        if line.startswith("SHUFFLE "):
            parts = line.split()
            res[" ".join(parts[1:-2])] = (float(parts[-2]), float(parts[-1]))
    return res


def vm_heap():
    vals = {}
    for line in vm_run(HEAP_IMPORT_STEPS + HEAP_STEPS).splitlines():
        if line.startswith("HEAP"):
            parts = line.split()
            vals[parts[0]] = [int(x) for x in parts[1:]]
    return vals


SIM_CHILD = """
import json, resource, sys, time
sys.path[:0] = [%r, %r]
from upsycle.sim.cyclon_sim import CyclonSim
from upsycle.sim import experiment
n, rounds, jobs, wire, metrics = %d, %d, %d, %r, %r
t0 = time.perf_counter()
sim = CyclonSim(n, 20, 8, seed=1, wire_sample=wire)
t1 = time.perf_counter()
c1 = time.process_time()
if metrics:
    rows, snap, sim_s = experiment.run(sim, rounds, workers=jobs)
    summary = experiment.summarize(sim, rows, snap)
    last = rows[-1]
    proto_cpu = None
else:
    sim_s = 0.0
    proto_cpu = 0.0
    for _ in range(rounds):
        a = time.perf_counter(); b = time.process_time()
        sim.run_round()
        sim_s += time.perf_counter() - a; proto_cpu += time.process_time() - b
    last = {}
t2 = time.perf_counter()
c2 = time.process_time()
ru = resource.getrusage(resource.RUSAGE_SELF)
ruc = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"setup_s": t1 - t0, "run_s": t2 - t1, "protocol_s": sim_s, "protocol_cpu_s": proto_cpu,
                  "main_cpu_s": c2 - c1, "worker_cpu_s": ruc.ru_utime + ruc.ru_stime,
                  "maxrss_kb": ru.ru_maxrss, "child_maxrss_kb": ruc.ru_maxrss,
                  "apl": last.get("apl"), "wire_msgs": sim.wire_msgs}))
"""


def sim_child(n, rounds, jobs=2, wire=0.01, metrics=True):
    code = SIM_CHILD % (ROOT, os.path.join(ROOT, "host"), n, rounds, jobs, wire, metrics)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--wire-rounds", type=int, default=3, help="rounds for the objects-vs-bytes comparison")
    ap.add_argument("--steps", type=int, default=2000, help="shuffles per case on CPython (the VM runs a tenth)")
    args = ap.parse_args([] if argv is None else argv)
    rows = []

    cp = cpython_shuffle(args.steps)
    mp = vm_shuffle(max(50, args.steps // 10))
    heap = vm_heap()

    big = sim_child(args.nodes, args.rounds, jobs=2)
    objs = sim_child(args.nodes, args.wire_rounds, wire=0.0, metrics=False)
    wire = sim_child(args.nodes, args.wire_rounds, wire=1.0, metrics=False)

    shuffles = args.nodes * args.rounds
    proto_us = big["protocol_s"] / shuffles * 1e6
    cp_proxy = cp[CASES[1][0]][0]
    rows.append(("simulator N=%d x %d rounds, metrics every round (2 processes)" % (args.nodes, args.rounds),
                 "%.1f s wall" % big["run_s"], "goal 60 s", "%.2fx goal" % (big["run_s"] / 60.0)))
    rows.append(("  CPU time: simulator process / metrics worker", "%.1f s" % big["main_cpu_s"],
                 "%.1f s" % big["worker_cpu_s"], "%.2fx goal (busiest core)" % (
                     max(big["main_cpu_s"], big["worker_cpu_s"]) / 60.0)))
    rows.append(("  protocol loop, wall", "%.1f s" % big["protocol_s"],
                 "%.1f us/shuffle" % proto_us, "%.2fx one encoded shuffle" % (proto_us / cp_proxy)))
    rows.append(("  peak memory (max RSS): simulator / metrics worker",
                 "%.0f MB" % (big["maxrss_kb"] / 1024.0), "%.0f MB" % (big["child_maxrss_kb"] / 1024.0), ""))
    o_us = objs["protocol_cpu_s"] / (args.nodes * args.wire_rounds) * 1e6
    w_us = wire["protocol_cpu_s"] / (args.nodes * args.wire_rounds) * 1e6
    rows.append(("simulator shuffle, message objects (no encoding), CPU", "%.1f us" % o_us, "", "1.00x"))
    rows.append(("simulator shuffle, every message encoded + parsed, CPU", "%.1f us" % w_us,
                 "%d messages" % wire["wire_msgs"], "%.2fx objects" % (w_us / o_us)))
    for name, c, l, idl in CASES:
        cu, size = cp[name]
        mu, _ = mp[name]
        rows.append(("one shuffle %s, CPython" % name, "%.1f us" % cu, "%.0f bytes on the wire" % size, "1.00x"))
        rows.append(("one shuffle %s, MicroPython VM" % name, "%.1f us" % mu, "", "%.1fx CPython" % (mu / cu)))
    a, b, c = heap["HEAPA"][0], heap["HEAPB"][0], heap["HEAPC"][0]
    rows.append(("VM heap: wire format modules imported (.py)", "%d B" % (b - a), "", "anchor"))
    rows.append(("VM heap: + cyclon module (.py, compiled in RAM)", "%d B" % (c - b), "",
                 "%.2fx wire modules" % ((c - b) / float(b - a))))
    h0 = heap["HEAP0"][0]
    h1, n1, p1 = heap["HEAP1"]
    h2, n2, p2 = heap["HEAP2"]
    rows.append(("VM heap: board CYCLON state c=8, 8-byte ids, 1 exchange pending", "%d B" % (h1 - h0),
                 "view %d, pending %d" % (n1, p1), "%.1f%% of 48 KB budget" % (100.0 * (h1 - h0) / 49152)))
    rows.append(("VM heap: proxy-size state c=20, 32-byte ids, 1 pending", "%d B" % (h2 - h1),
                 "view %d, pending %d" % (n2, p2), "%.1f%% of 48 KB budget" % (100.0 * (h2 - h1) / 49152)))

    print(render("CYCLON and its simulator (N=%d, %d rounds)" % (args.nodes, args.rounds),
                 ("benchmark", "value", "detail", "ratio"), rows))
    print("(machine: %d cores, load average %s at the end; wall times depend on the load, CPU times less)"
          % (os.cpu_count(), " ".join("%.1f" % x for x in os.getloadavg())))


if __name__ == "__main__":
    main(sys.argv[1:])
