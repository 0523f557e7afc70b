"""What removal costs: re-key sizes and parts by topic size, and the time
`upsycle pub` on a private topic spends catching up on re-keys.

    .venv/bin/python tools/bench/run.py rekey
    .venv/bin/python tools/bench/bench_rekey.py --rounds 5

Table 1: one removal's group_rekey parts (each at most the proxy's payload
limit) for a topic of N remaining members.
Table 2: wall time and client CPU of `upsycle pub` as a process, through a
proxy process, for the admin (no catch-up: the anchor) and for a member
(catch-up subscription first), median of the rounds, and the ratio.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "host"))

from table import render  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host") + os.pathsep + ROOT)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "upsycle"] + list(args), env=ENV, cwd=ROOT,
                          capture_output=True, check=True).stdout.decode()


def sizes():
    from shared_protocol.groups.admin import Admin
    from shared_protocol.groups.wire import MEMBERS_MAX
    from upsycle import crypto_nacl
    crypto_nacl.install()
    rows = []
    for n in (1, 7, 8, 20, MEMBERS_MAX - 1):
        a = Admin(os.urandom(32), os.urandom(32))
        for _ in range(n + 1):
            a.invite(os.urandom(32))
        parts = a.remove(sorted(a.members)[0], os.urandom(32), os.urandom(32))
        rows.append([n, len(parts), sum(len(p) for p in parts), max(len(p) for p in parts)])
    print(render("one removal: group_rekey parts (limit %d bytes each)" % 1024,
                 ["remaining members", "parts", "bytes", "largest part"], rows))


def _timed(*args):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    _cli(*args)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def pub_times(rounds):
    from upsycle.processes import free_port
    d = tempfile.mkdtemp(prefix="bench-rekey-")
    admin, member = os.path.join(d, "admin"), os.path.join(d, "member")
    _cli("topic", "--home", admin, "create", "garden")
    url = _cli("topic", "--home", admin, "invite", "garden", "--read", "--write", "--no-qr").strip()
    _cli("topic", "--home", member, "join", url)
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "upsycle", "proxy", "--data", os.path.join(d, "proxy"),
                              "--listen", "127.0.0.1:%d" % port], env=ENV, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        hp = "127.0.0.1:%d" % port
        res = {"admin": [], "member": []}
        for i in range(rounds):
            for who, home in (("admin", admin), ("member", member)):
                res[who].append(_timed("pub", "garden", "reading %d" % i, "--proxy", hp, "--home", home))
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)
    rows = []
    anchor = statistics.median(w for w, _ in res["admin"])
    for who, label in (("admin", "admin (no catch-up, anchor)"), ("member", "member (catch-up first)")):
        wall = statistics.median(w for w, _ in res[who])
        cpu = statistics.median(c for _, c in res[who])
        rows.append([label, wall, cpu, wall / anchor])
    print(render("`upsycle pub` of one message on a private topic, median of %d" % rounds,
                 ["who", "wall s", "client CPU s", "ratio"], rows))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes()
    pub_times(args.rounds)


if __name__ == "__main__":
    main()
