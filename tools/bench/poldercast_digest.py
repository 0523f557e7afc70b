"""A per-seed digest of everything a `sim poldercast` run decided, to check
that a change to the simulator or the protocols (a speed-up) decides
exactly as before:

    .venv/bin/python tools/bench/poldercast_digest.py [--nodes 300] [--rounds 30] [--scenario base|churn|crash|all]

Per scenario it prints one SHA-256 over: every proxy's CYCLON view (ids,
addresses, stamps), VICINITY view (ids, stamps, filters), per topic the
known subscribers (id, address, stamp, direct) and ring neighbours, the
peers that named topics to it and the dead it remembers, its exchanges in
flight, its Rng state and dissemination counters; every publication's
result; the error and message counts; every metrics row (a full
measurement every round). Run it on the code before and after a change:
the lines must be identical.
"""
import argparse
import hashlib
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "host")]

from upsycle.sim import poldercast_metrics  # noqa: E402
from upsycle.sim.cyclon_sim import Event  # noqa: E402
from upsycle.sim.poldercast_sim import PolderCastSim  # noqa: E402

SCENARIOS = {
    # name: PolderCastSim keyword arguments beyond n, topics, rounds
    "base": {},
    "churn": {"churn": 0.02},
    "crash": {"events": "crash"},
    "loss": {"loss": 0.02},
}


def node_state(n):
    c = n.cyclon
    out = [n.id, tuple(c.ids), tuple(c._addrs), tuple(c._stamps), c._clock, repr(c._pending)]
    out.append(repr([(e[0], e[2], e[3], e[4]) for e in n.vicinity._view]))
    out.append(repr(n.vicinity._pending))
    r = n.rings
    for t in r.topics:
        v = r._ring[t]
        out.append((t, repr(v.ke), v.at, tuple(v.succ), tuple(v.pred)))
    out.append(repr(sorted(r._direct.items())))
    out.append(repr(r._direct_order))
    out.append(repr(r._dead))
    out.append(repr(r._recent))
    out.append(repr(r._pending))
    out.append(r._clock)
    out.append(n.rng._s)
    out.append((n.diss.duplicates, n.diss.delivered, len(n.diss.seen)))
    out.append(repr(n._prof_order))
    out.append(repr(n._need_order))
    if n.urps is not None:
        u = n.urps
        out.append(repr((u._ids, u._est, [list(r) for r in u.sketch._rows])))
    return repr(out).encode()


def digest(n, topics, rounds, scenario, seed, every=1, node_options=None):
    kw = dict(SCENARIOS[scenario])
    if node_options:
        kw["node_options"] = node_options
    if kw.get("events") == "crash":
        kw["events"] = [Event("crash", rounds // 2, 0.5)]
    sim = PolderCastSim(n, topics, 2.3, 5 if topics >= 5 else topics, seed=seed,
                        publish_from=max(1, rounds // 3), pubs_per_round=10, **kw)
    rows = poldercast_metrics.run(sim, rounds, every)
    h = hashlib.sha256()
    for node in sim.nodes:
        h.update(node_state(node))
    h.update(repr(sim.pub_results).encode())
    h.update(repr(sorted(sim.errors.items())).encode())
    h.update(repr(sorted(sim.sent.items())).encode())
    h.update(repr(sorted(sim.sampled.items())).encode())
    h.update(repr(rows).encode())
    h.update(repr((sim.lost, sim.to_down, sim.rng.getstate()[1][:8])).encode())
    return h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--topics", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--every", type=int, default=1, help="full measurement every K rounds")
    ap.add_argument("--scenario", default="all", choices=sorted(SCENARIOS) + ["all"])
    ap.add_argument("--no-probe", action="store_true",
                    help="proxies without Rings.probe (the decisions of the code before it)")
    a = ap.parse_args(argv)
    names = sorted(SCENARIOS) if a.scenario == "all" else [a.scenario]
    for name in names:
        t0 = time.process_time()
        d = digest(a.nodes, a.topics, a.rounds, name, a.seed, a.every,
                   {"probe_stale": False} if a.no_probe else None)
        print("%-6s N=%d T=%d R=%d seed=%d  %s  (%.1f s CPU)" % (
            name, a.nodes, a.topics, a.rounds, a.seed, d, time.process_time() - t0), flush=True)


if __name__ == "__main__":
    main()
