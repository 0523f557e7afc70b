"""Benchmarks of the core overlay simulator and its anchors, as tables.

    .venv/bin/python tools/bench/bench_poldercast.py [--nodes 10000] [--topics 1000] [--rounds 100]

1. `upsycle sim poldercast` at N proxies, T topics, Zipf 2.3, 5 topics per
   proxy, R rounds (a child process, as a user runs it): wall time, CPU,
   peak memory (max RSS of the child), and the run's own figures (rings
   convergence, topic-connectivity, hit ratio, messages per subscriber,
   deliveries to non-subscribers, hops).
2. Anchor, relay-full baseline: CYCLON alone (c=20, l=8) over the same N,
   every message encoded (bytes per proxy per round), and flooding each
   publication of the same topics over the CYCLON overlay (every proxy
   forwards to its whole view once): messages per subscriber and deliveries
   to non-subscribers, against PolderCast's gossip bytes, distinct
   neighbours and messages per subscriber, as ratios.
3. Anchor, pure random push (RingCast's comparison): each subscriber that
   gets a message for the first time pushes it to F random subscribers of
   the topic. At PolderCast's F it misses subscribers; the table gives the
   smallest F at which random push reached every subscriber of every
   sampled publication, and its messages per subscriber against
   PolderCast's at complete delivery.
"""
import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "host"), os.path.dirname(os.path.abspath(__file__))]

from table import render  # noqa: E402


def run_sim(args, out):
    exe = os.path.join(os.path.dirname(sys.executable), "upsycle")
    cmd = [exe, "sim", "poldercast", "--nodes", str(args.nodes), "--topics", str(args.topics),
           "--zipf", str(args.zipf), "--subs-per-node", str(args.subs), "--rounds", str(args.rounds),
           "--seed", str(args.seed), "--quiet", "--no-plots", "--out", out]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary, wall, cpu, after.ru_maxrss, proc.stdout


def earlier_run(out, args):
    """(summary, wall, cpu, max RSS in KB) of a finished run in ``out``;
    its configuration replaces the command line's."""
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(out, "timing.json")) as f:
        timing = json.load(f)
    cfg = summary["config"]
    args.nodes, args.topics, args.zipf = cfg["nodes"], cfg["topics"], cfg["zipf"]
    args.subs, args.rounds, args.fanout, args.seed = cfg["subs_per_node"], cfg["rounds"], cfg["fanout"], cfg["seed"]
    wall = timing["run_s"] + timing.get("summary_s", 0.0)
    rss = timing.get("max_rss_mb")
    return summary, wall, timing.get("cpu_s", float("nan")), (rss * 1024.0 if rss is not None else float("nan"))


def subscription_table(out):
    """topic -> list of proxy ids (hex), from the run's subscriptions.csv."""
    import csv
    subs = {}
    with open(os.path.join(out, "subscriptions.csv")) as f:
        for r in csv.DictReader(f):
            subs.setdefault(int(r["topic"]), []).append(r["proxy"])
    return subs


def cyclon_anchor(n, rounds, seed):
    from upsycle.sim.cyclon_sim import CyclonSim
    c0 = time.process_time()
    sim = CyclonSim(n, 20, 8, seed=seed, bootstrap="random", wire_sample=1.0)
    for _ in range(rounds):
        sim.run_round()
    cpu = time.process_time() - c0
    views = [node.ids for node in sim.nodes]
    return sim.wire_bytes / n / rounds, sum(len(v) for v in views) / n, views, cpu


def flood(views, subs_idx, origin):
    """Relay-full flooding over the CYCLON graph (undirected: a view entry is
    a link both ends use). Returns (messages, subscribers reached, others)."""
    n = len(views)
    adj = [[] for _ in range(n)]
    for i in range(n):
        for j in views[i]:
            adj[i].append(j)
            adj[j].append(i)
    seen = bytearray(n)
    seen[origin] = 1
    stack = [origin]
    msgs = 0
    while stack:
        u = stack.pop()
        for v in adj[u]:
            msgs += 1
            if not seen[v]:
                seen[v] = 1
                stack.append(v)
    reached = sum(seen[i] for i in subs_idx)
    return msgs, reached, sum(seen) - reached


def random_push(size, fanout, rng):
    """Infect-and-die push among `size` subscribers. (messages, reached)."""
    if size < 2:
        return 0, size
    got = bytearray(size)
    got[0] = 1
    frontier = [0]
    msgs = 0
    while frontier:
        nxt = []
        for u in frontier:
            for _ in range(fanout):
                v = rng.randrange(size - 1)
                v = v if v < u else v + 1
                msgs += 1
                if not got[v]:
                    got[v] = 1
                    nxt.append(v)
        frontier = nxt
    return msgs, sum(got)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--zipf", type=float, default=2.3)
    ap.add_argument("--subs", type=int, default=5)
    ap.add_argument("--fanout", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--anchor-rounds", type=int, default=5, help="CYCLON-only rounds for the byte anchor")
    ap.add_argument("--out", default=None, help="keep the simulator's output here")
    ap.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                    help="take the simulator's figures from an earlier `upsycle sim poldercast` run in DIR "
                         "(its summary.json, timing.json, subscriptions.csv) instead of running it again")
    args = ap.parse_args([] if argv is None else argv)
    if args.from_dir:
        out = args.from_dir
        summary, wall, cpu, rss_kb = earlier_run(out, args)
    else:
        out = args.out or tempfile.mkdtemp(prefix="bench-poldercast-")
        summary, wall, cpu, rss_kb, text = run_sim(args, out)
    pub = summary["publications"]
    fin = summary["final"]
    print(render("upsycle sim poldercast N=%d T=%d Zipf %g, %d topics per proxy, %d rounds" % (
        args.nodes, args.topics, args.zipf, args.subs, args.rounds), ("figure", "value"), [
        ("wall time (s)", wall), ("CPU (s)", cpu), ("peak memory (MB, max RSS)", rss_kb / 1024.0),
        ("rings convergence, last round (%)", 100 * (fin["ring_convergence"] or 0)),
        ("rings 100% from round", summary["ring_converged_round"]),
        ("topic-connectivity, last round (%)", 100 * (fin["topic_connectivity"] or 0)),
        ("publications", pub["publications"]), ("hit ratio (%)", 100 * pub["hit_ratio"]),
        ("worst publication's hit ratio (%)", 100 * pub["hit_ratio_min"]),
        ("messages per subscriber", pub["msgs_per_subscriber"]),
        ("deliveries to non-subscribers", pub["non_subscriber"]),
        ("hops mean / max", "%.2f / %d" % (pub["hops_mean"], pub["hops_max"])),
        ("worst hops mean / (1.2 log2 size + 2)", pub["hops_bound_worst"]),
    ]))
    print()

    # Anchor 1: CYCLON-only, relay-full flooding of the same topics.
    cyc_bytes, cyc_nb, views, cyc_cpu = cyclon_anchor(args.nodes, args.anchor_rounds, args.seed)
    from upsycle.sim.cyclon_sim import node_id
    index = {node_id(i): i for i in range(args.nodes)}
    views_i = [[index[p] for p in v] for v in views]
    subs = subscription_table(out)
    rng = random.Random(args.seed)
    topics = [t for t in sorted(subs) if len(subs[t]) > 1]
    sample = [topics[rng.randrange(len(topics))] for _ in range(20)]
    f_msgs = f_subs = f_other = 0
    for t in sample:
        # the same topic sizes, on proxies of the CYCLON run
        members = rng.sample(range(args.nodes), len(subs[t]))
        m, reached, other = flood(views_i, members, members[0])
        f_msgs += m
        f_subs += len(members)
        f_other += other
    pc_bytes = summary["gossip_bytes_per_node_per_round"]
    pc_nb = fin["distinct_neighbours"] or 0
    print(render("Against CYCLON-only flooding (relay-full), same N, same topic sizes (%d publications)" % len(sample),
                 ("figure", "PolderCast", "CYCLON only", "ratio"), [
        ("gossip bytes / proxy / round", pc_bytes, cyc_bytes, pc_bytes / cyc_bytes),
        ("distinct neighbours / proxy", pc_nb, cyc_nb, pc_nb / cyc_nb),
        ("messages per subscriber / publication", pub["msgs_per_subscriber"], f_msgs / f_subs,
         pub["msgs_per_subscriber"] / (f_msgs / f_subs)),
        ("deliveries to non-subscribers / publication", pub["non_subscriber"] / max(1, pub["publications"]),
         f_other / len(sample), ""),
        ("CPU of the run (s)", cpu, cyc_cpu, ""),
    ]))
    print()

    # Anchor 2: pure random push among the subscribers, same topic sizes.
    sizes = [len(subs[t]) for t in sample]
    rows = []
    c0 = time.process_time()
    full_f = None
    for f in list(range(args.fanout, 31)):
        prng = random.Random(args.seed * 100 + f)
        msgs = got = tot = 0
        for rep in range(5):
            for s in sizes:
                m, r = random_push(s, f, prng)
                msgs += m
                got += r
                tot += s
        if f == args.fanout:
            rows.append(("random push, F=%d" % f, 100.0 * got / tot, msgs / tot, (msgs / tot) / pub["msgs_per_subscriber"]))
        if got == tot:
            full_f = f
            rows.append(("random push, F=%d (first F with every subscriber reached)" % f, 100.0, msgs / tot,
                         (msgs / tot) / pub["msgs_per_subscriber"]))
            break
    rp_cpu = time.process_time() - c0
    rows.insert(0, ("PolderCast/RingCast, F=%d" % args.fanout, 100 * pub["hit_ratio"], pub["msgs_per_subscriber"], 1.0))
    print(render("Against pure random push (%d topic sizes x 5; random push CPU %.1f s)" % (len(sizes), rp_cpu),
                 ("dissemination", "hit ratio (%)", "messages / subscriber", "vs PolderCast"), rows))
    if full_f is None:
        print("random push did not reach every subscriber up to F=30")
    print("(simulator output in %s)" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
