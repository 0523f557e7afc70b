"""DMC benchmarks: retained heap of a replica in the MicroPython VM, operations
applied per second (CPython and VM), and anti-entropy bytes against the bytes
of the missing operations.

    PYTHONPATH=host:. /tmp/v/bin/python tools/bench/bench_dmc.py

Anchors (same run): operation throughput is also given as a ratio to plain
``cbor.decode`` of the same operation bytes (the least any receiver must do);
sync bytes are given as a ratio to the encoded size of the missing operations.
"""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "host"))

from shared_protocol.dmc import Replica, Sync  # noqa: E402
from shared_protocol.dmc import sync as S  # noqa: E402
from upsycle import vm  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import table  # noqa: E402

# The workload of the issue: 4 keys, a counter, a set of 20 items, a
# 200-reading log. Runs the same on both interpreters.
BUILD = """
from shared_protocol.dmc import Replica
def build():
    r = Replica(b"sensor-node-0001", 200, 0)
    for k in ("rate", "unit", "name", "site"):
        r.put("cfg", k, "v-" + k)
    for i in range(10):
        r.add("boots", 1)
    for i in range(20):
        r.insert("tags", "tag%02d" % i)
    for i in range(200):
        r.append("temp", 1700000000 + 60 * i, 18.0 + (i % 40) * 0.25)
    return r
"""

THROUGHPUT = BUILD + """
REPS = 7
import time
from shared_protocol.wire import cbor
try:
    clock = time.ticks_ms
    def elapsed(t0):
        return time.ticks_diff(time.ticks_ms(), t0) / 1000
except AttributeError:
    clock = time.perf_counter
    def elapsed(t0):
        return time.perf_counter() - t0
src = build()
ops = list(src.tail)
best = [1e9, 1e9, 1e9]
for rep in range(REPS):
    t0 = clock()
    for o in ops:
        cbor.decode(o)
    best[0] = min(best[0], elapsed(t0))
    dst = Replica(b"gateway-00000002", 200, 0)
    t0 = clock()
    for o in ops:
        dst.receive(o)
    best[1] = min(best[1], elapsed(t0))
    t0 = clock()
    build()
    best[2] = min(best[2], elapsed(t0))
assert dst.state_bytes() == src.state_bytes()
print("RESULT", len(ops), best[0], best[1], best[2])
"""


def throughput_cpython():
    ns = {}
    code = THROUGHPUT.replace('print("RESULT"', 'RESULT = ("RESULT"')
    exec(compile(code, "bench", "exec"), ns)
    return ns["RESULT"][1:]


def throughput_vm():
    p = vm.run([THROUGHPUT])
    if p.returncode:
        raise SystemExit(p.stderr)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT"):
            f = line.split()[1:]
            return int(f[0]), float(f[1]), float(f[2]), float(f[3])
    raise SystemExit("no result from the VM:\n" + p.stdout + p.stderr)


def heap_vm():
    steps = [
        "import gc\ngc.collect()",
        "import gc\nM0 = gc.mem_alloc()\n" + BUILD + "\nimport shared_protocol.dmc.sync\ngc.collect()",
        "import gc\nM1 = gc.mem_alloc()\nR = build()\ngc.collect()",
        "import gc\nM2 = gc.mem_alloc()\nR.compact(R.vv)\ngc.collect()",
        "import gc\nM3 = gc.mem_alloc()\nS = R.snapshot()\nprint('HEAP', M1 - M0, M2 - M1, M3 - M1, len(S), len(R.tail))",
    ]
    p = vm.run(steps)
    if p.returncode:
        raise SystemExit(p.stderr)
    for line in p.stdout.splitlines():
        if line.startswith("HEAP"):
            return [int(x) for x in line.split()[1:]]
    raise SystemExit("no result from the VM:\n" + p.stdout + p.stderr)


def exchange(x, y):
    sx = Sync(x, y.author, 1)
    sy = Sync(y, x.author, 1)
    q = [(sy, sx, m) for m in sx.start(0)]
    sent = msgs = 0
    now = 0
    while True:
        while q:
            dst, src, m = q.pop(0)
            sent += len(m)
            msgs += 1
            for r in dst.receive(m, now):
                q.append((src, dst, r))
        now += S.RETRY_MS
        for s, o in ((sx, sy), (sy, sx)):
            q.extend((o, s, m) for m in s.poll(now))
        if not q:
            return sent, msgs, sx, sy


def sync_bytes(k, author_len, tail_max=None):
    kw = {} if tail_max is None else {"tail_max": tail_max}
    a = Replica(b"a" * author_len, 200, 0, **kw)
    b = Replica(b"b" * author_len, 200, 0, **kw)
    for i in range(10):
        b.receive(a.put("cfg", "k%d" % i, i))
    missing = 0
    for i in range(k):
        missing += len(a.append("temp", 1700000000 + 60 * i, 18.0 + (i % 40) * 0.25))
        missing += len(b.add("n", 1) if i % 2 else b.put("cfg", "k%d" % (i % 10), -i))
    summary = len(Sync(a).summary(S.WANT)[0]) + len(Sync(b).summary()[0])
    sent, msgs, _, _ = exchange(a, b)
    assert a.state_bytes() == b.state_bytes()
    snap = len(a.snapshot())
    return missing, sent, summary, msgs, snap


def main():
    print("DMC benchmarks (MicroPython 1.27 WebAssembly VM and CPython %d.%d, same machine)\n" % sys.version_info[:2])
    h = heap_vm()
    print(table.render(
        "Retained heap in the VM (gc.mem_alloc after a collection, control back in JS)",
        ("what", "bytes"),
        [("dmc modules imported (.py source; frozen .mpy on a board)", h[0]),
         ("replica: 4 keys, counter, 20-item set, 200-reading log, 234-op tail", h[1]),
         ("same replica after compaction (tail %d ops)" % h[4], h[2]),
         ("its encoded snapshot (wire / flash bytes)", h[3])]))
    print()
    n, dec_c, app_c, loc_c = throughput_cpython()
    n2, dec_v, app_v, loc_v = throughput_vm()
    rows = []
    for name, dec, app, loc in (("CPython", dec_c, app_c, loc_c), ("MicroPython VM", dec_v, app_v, loc_v)):
        rows.append((name, n / app, n / loc, n / dec, app / dec))
    rows.append(("VM / CPython (apply time)", app_v / app_c, loc_v / loc_c, dec_v / dec_c, ""))
    print(table.render(
        "Operations per second (%d ops of the workload above; best of 7, shared machine: compare ratios)" % n,
        ("interpreter", "remote apply ops/s", "local write ops/s", "cbor.decode ops/s (anchor)", "apply / decode time"),
        rows))
    print()
    rows = []
    for k, tm in ((10, None), (100, None), (1000, None), (1000, 4096)):
        missing, sent, summary, msgs, snap = sync_bytes(k, 16, tm)
        limit = tm or 256
        path = "ops" if 2 * k + 10 <= limit else "snapshot (%d-byte state)" % snap
        label = "%d%s" % (k, "" if tm is None else " tail_max=%d" % tm)
        rows.append((label, missing, sent, sent / missing, summary, msgs, path))
    missing, sent, summary, msgs, snap = sync_bytes(100, 32)
    rows.append(("100, 32-byte ids", missing, sent, sent / missing, summary, msgs, "ops"))
    print(table.render(
        "Anti-entropy after a partition where each side made k ops (16-byte author ids unless said)",
        ("k", "missing-op bytes", "sync bytes", "sync / missing", "2 summaries", "datagrams", "path"),
        rows))


if __name__ == "__main__":
    main()
