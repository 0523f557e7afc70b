"""Start the systems under test and drive them, for bench_proxy and bench_scale.

- ``Mosquitto``: the Debian broker with persistence on (a generated config in
  a temp dir); it acknowledges QoS 1 before anything reaches disk.
- ``Proxy``: ``upsycle proxy`` as a subprocess with a temp data dir; it
  acknowledges once the SQLite transaction holding the message is synced.
- ``run_c_clients``: Mosquitto's own C tools, ``mosquitto_sub -q 1 -C N``
  and ``mosquitto_pub -l -q 1 -M W`` (Debian package mosquitto-clients).
- ``run_loadgens``: several loadgen.py processes, for either system.

CPU figures: a process's user + system seconds. The C clients' come from the
kernel's accounting of the exited process (whole life, connect included:
milliseconds); a load generator reports its own for the run phase; a broker's
is read from /proc over the run phase.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "host"), ROOT]

from upsycle.processes import free_port, wait_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def need(tool, package):
    p = shutil.which(tool) or ("/usr/sbin/" + tool if os.path.exists("/usr/sbin/" + tool) else None)
    if p is None:
        sys.exit("%s not found: apt-get install -y %s (tools/setup.sh installs it)" % (tool, package))
    return p


def proc_cpu(pid):
    """User + system CPU seconds of a live process (/proc/PID/stat)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_sys_cpu(pid):
    """System (kernel) CPU seconds of a live process: its socket calls'
    share (on loopback the receiver's side of a send runs in it too)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[12]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reap(p):
    """Wait for a child and return its CPU seconds (kernel accounting)."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


class Server:
    """A server process under test: its CPU, its memory, its stop."""
    stop_timeout_s = 20

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def rss_kb(self):
        return proc_rss_kb(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(self.stop_timeout_s)


class Mosquitto(Server):
    name = "mosquitto"

    def __init__(self, tmp, window, max_connections=-1):
        self.port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    "persistence_location %s/\nmax_inflight_messages %d\nmax_queued_messages 1000000\n"
                    "max_connections %d\nlog_dest none\n" % (self.port, tmp, window, max_connections))
        self.proc = subprocess.Popen([need("mosquitto", "mosquitto"), "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)



class Proxy(Server):
    name = "upsycle"
    stop_timeout_s = 60     # a proxy commits its queues on SIGTERM

    def __init__(self, tmp, secure=False, config=None, data=None, root=ROOT, runner=None, loop=None):
        """root: the checkout whose proxy runs (another one's for a
        before/after comparison in one sitting). runner: (python source,
        its arguments) run with ``-c`` in place of ``-m upsycle``, given the
        proxy's command line after them (profile_proxy.RUNNER: a profiler
        switched on and off by signals). loop: the proxy's --loop (its
        event loop: "uvloop", "asyncio"); None: its default."""
        self.port = free_port()
        self.data = data or os.path.join(tmp, "data")
        env = dict(os.environ, PYTHONPATH=os.path.join(root, "host") + os.pathsep + root,
                   UPSYCLE_HOME=os.path.join(tmp, "home"))
        head = [sys.executable, "-c", runner[0]] + list(runner[1]) if runner else [sys.executable, "-m", "upsycle"]
        args = head + ["proxy", "--data", self.data,
                       "--listen", "127.0.0.1:%d" % self.port]
        if config:
            path = os.path.join(tmp, "proxy.toml")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        if not secure:
            args.append("--insecure")
        if loop:
            args += ["--loop", loop]
        self.t_start = time.perf_counter()
        self.proc = subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, 600, proc=self.proc,
                  output=lambda: self.proc.stderr.read()[-2000:].decode(errors="replace"))
        self.start_s = time.perf_counter() - self.t_start
        # the first stderr line says the public key (and that start-up is done)
        self.key = None
        for line in self.proc.stderr:
            line = line.decode(errors="replace")
            if "public key" in line:
                self.key = line.split()[-1]
                break
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for _ in self.proc.stderr:
            pass



def split(items, k):
    return [items[i::k] for i in range(k)] if items else []


def run_loadgens(specs, timeout=600, on_ready=None, on_results=None):
    """Start one loadgen.py per spec, wait until all are ready, say go to all
    at once, return (results, wall seconds from go to the last delivery).
    on_results: called once every generator has reported, before they exit
    (their disconnects are not part of the run)."""
    procs = []
    for spec in specs:
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "loadgen.py")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, cwd=ROOT)
        p.stdin.write((json.dumps(spec) + "\n").encode())
        p.stdin.flush()
        procs.append(p)
    try:
        readies = []
        for p in procs:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a load generator failed before ready (see its stderr)")
            readies.append(json.loads(line))
        if on_ready is not None:
            on_ready()
        t_go = time.time()
        for p in procs:
            p.stdin.write(b"go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a load generator failed during the run (see its stderr)")
            results.append(json.loads(line))
        if on_results is not None:
            on_results()
        for p in procs:
            p.wait(timeout)
        for r, rd in zip(results, readies):
            r["connect_s"] = rd["connect_s"]
        return results, t_go
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_c_clients(port, pairs, per_pub, window, payload, rate=0.0):
    """Mosquitto's C clients: per pair a mosquitto_sub (-q 1 -C N, prints the
    arrival time of each message) and a mosquitto_pub (-l -q 1 -M window)
    reading lines from a pipe. rate 0: the whole input is written at once
    (mosquitto_pub reads ahead and keeps ``window`` in flight); rate > 0:
    lines are written at that rate per publisher, each stamped when written.
    Returns (latencies us, t_go, t_last, client CPU s)."""
    pub_bin, sub_bin = need("mosquitto_pub", "mosquitto-clients"), need("mosquitto_sub", "mosquitto-clients")
    # A retained probe per topic reaches each subscriber exactly once, as soon
    # as its subscription is in place: the signal that timing may start.
    for i in range(pairs):
        subprocess.run([pub_bin, "-p", str(port), "-q", "1", "-r", "-t", "bench/%d" % i, "-m", "0 probe"],
                       check=True)
    subs = [subprocess.Popen([sub_bin, "-p", str(port), "-q", "1", "-t", "bench/%d" % i, "-C", str(per_pub + 1),
                              "-F", "%U %p"], stdout=subprocess.PIPE) for i in range(pairs)]
    outs = [None] * pairs
    ready = [threading.Event() for _ in range(pairs)]

    def collect(i):
        subs[i].stdout.readline()   # the probe
        ready[i].set()
        outs[i] = subs[i].stdout.read()

    readers = [threading.Thread(target=collect, args=(i,)) for i in range(pairs)]
    for t in readers:
        t.start()
    for e in ready:
        if not e.wait(20):
            raise RuntimeError("mosquitto_sub did not subscribe within 20 s")
    pubs = [subprocess.Popen([pub_bin, "-p", str(port), "-q", "1", "-t", "bench/%d" % i, "-l", "-M", str(window)],
                             stdin=subprocess.PIPE) for i in range(pairs)]
    time.sleep(0.3)   # connected, waiting for input
    pad = b"x" * max(0, payload - 21)
    t_go = time.time()

    def feed(i):
        p = pubs[i]
        if rate <= 0:
            now = time.time_ns()
            p.stdin.write(b"".join(b"%d %s\n" % (now, pad) for _ in range(per_pub)))
        else:
            t0 = time.perf_counter()
            sent = 0
            while sent < per_pub:
                due = min(per_pub, int((time.perf_counter() - t0) * rate) + 1)
                if due > sent:
                    now = time.time_ns()
                    p.stdin.write(b"".join(b"%d %s\n" % (now, pad) for _ in range(due - sent)))
                    p.stdin.flush()
                    sent = due
                time.sleep(0.002)
        p.stdin.flush()

    feeders = [threading.Thread(target=feed, args=(i,)) for i in range(pairs)]
    for t in feeders:
        t.start()
    for t in feeders:
        t.join()
    for t in readers:
        t.join(300)
    # Each mosquitto_pub's input is closed only once its subscriber has
    # everything: at end of input mosquitto_pub -l (2.0.11) exits with
    # status 0 and drops what it read but has not sent (given 100,000 lines
    # at once it sent some 34,500, and this run waited for the rest for
    # ever).
    for p in pubs:
        p.stdin.close()
    for t, s in zip(readers, subs):
        if t.is_alive():
            s.kill()   # 300 s without its last message: the count below fails the run
            t.join(10)
    cpu = sum(reap(p) for p in pubs)
    cpu += sum(reap(s) for s in subs)
    lat = []
    t_last = 0.0
    for out in outs:
        for line in (out or b"").splitlines():
            parts = line.split(b" ", 2)
            t_recv = float(parts[0])
            lat.append(int((t_recv - int(parts[1]) / 1e9) * 1e6))
            t_last = max(t_last, t_recv)
    if len(lat) != pairs * per_pub:
        raise RuntimeError("mosquitto C clients delivered %d of %d" % (len(lat), pairs * per_pub))
    return lat, t_go, t_last, cpu
