"""Which topics of a `sim poldercast` run are split, and why (a diagnostic,
not a benchmark: it measures the state of a run, it times nothing):

    .venv/bin/python tools/bench/poldercast_split.py --nodes 5000 --topics 500 --rounds 20 --at 10,15,20 [--detail]

It runs the simulator without publications (seed 1 unless --seed) and at
each round of --at prints one row: proxies with a needy filter, entries in
the needy profile memories and the share of them whose proxy is needy
now, and the topics (of those with 2 or more subscribers) whose
subscribers are not one connected graph. With --detail, for each split
topic, its parts (connected by any view's links) and for each member: its
ring slots for the topic (s = successors, p = predecessors), known
subscribers (kd), whether its successor wraps (the part's searcher,
Rings.wraps), whether the topic is in its needy filter, and how many
proxies remember it in their needy memory (nmem).
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "host")]

from shared_protocol.overlay import ids  # noqa: E402
from shared_protocol.overlay.profile import topic_mask  # noqa: E402
from upsycle.sim import poldercast_metrics as pm  # noqa: E402
from upsycle.sim.poldercast_sim import PolderCastSim  # noqa: E402


def parts(subs, nbrs):
    """The connected parts of one topic's subscribers (union-find over the
    links between them)."""
    up = {i: i for i in subs}

    def root(a):
        while up[a] != a:
            up[a] = up[up[a]]
            a = up[a]
        return a
    for i in subs:
        for j in nbrs[i]:
            if j in up:
                a, b = root(i), root(j)
                if a != b:
                    up[a] = b
    out = {}
    for i in subs:
        out.setdefault(root(i), []).append(i)
    return list(out.values())


def report(sim, detail):
    nodes = sim.nodes
    needy_now = set(n.id for n in nodes if n.rings.needy_mask())
    nmem = {}
    entries = current = 0
    for n in nodes:
        for p in n._need_order:
            nmem[p] = nmem.get(p, 0) + 1
            entries += 1
            current += p in needy_now
    nbrs = pm.neighbour_sets(sim)
    by_topic = pm.subscriber_lists(sim)
    multi = 0
    split = []
    for t in range(sim.n_topics):
        subs = by_topic[t]
        if len(subs) < 2:
            continue
        multi += 1
        ps = parts(subs, nbrs)
        if len(ps) > 1:
            split.append((t, len(subs), ps))
    print("%5d %8d %10d %8.1f%% %6d of %d" % (sim.round, len(needy_now), entries, 100.0 * current / max(1, entries),
                                              len(split), multi))
    if not detail:
        return
    for t, size, ps in split:
        tid = sim.topic_ids[t]
        m = topic_mask(tid, sim.nodes[0].bits, sim.nodes[0].subs.hashes)
        print("      topic %d (%d subscribers)" % (t, size))
        for part in ps:
            cells = []
            for i in part:
                r = nodes[i].rings
                v = r._ring[tid]
                wrap = bool(v.succ) and ids.pos(v.succ[0]) < r.pos
                cells.append("[%d s%d p%d kd%d%s%s nmem%d]" % (
                    i, len(v.succ), len(v.pred), len(v.kd), " wrap" if wrap else "",
                    " needy" if r.needy_mask() & m == m else "", nmem.get(nodes[i].id, 0)))
            print("        part: " + " ".join(cells))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--topics", type=int, default=500)
    ap.add_argument("--zipf", type=float, default=2.3)
    ap.add_argument("--subs-per-node", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--at", default="10,15,20", help="rounds to report, comma-separated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--detail", action="store_true", help="list every split topic's parts and members")
    a = ap.parse_args()
    at = set(int(x) for x in a.at.split(","))
    sim = PolderCastSim(a.nodes, a.topics, a.zipf, a.subs_per_node, seed=a.seed, publish_from=10 ** 9)
    print("round    needy  needy-mem  current  split topics")
    t0 = time.process_time()
    for _ in range(a.rounds):
        sim.run_round()
        if sim.round in at:
            report(sim, a.detail)
    print("CPU %.1f s for %d rounds (N = %d)" % (time.process_time() - t0, a.rounds, a.nodes))


if __name__ == "__main__":
    main()
