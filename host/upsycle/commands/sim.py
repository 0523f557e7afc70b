"""`upsycle sim cyclon`: simulate a CYCLON overlay and measure it.

    upsycle sim cyclon --nodes 10000 --rounds 100 --view 20 --shuffle 8 \\
        --loss 0.05 --event crash@50:0.5 --seed 1 --out runs/cyclon

writes DIR/metrics.csv (one row per round), DIR/summary.json (config,
random-graph references, an Erdos-Renyi graph of the same size, robustness,
healing, convergence) and PNG plots. The same seed gives the same files
(timings excluded: they live in DIR/timing.json).
"""
import csv
import json
import os
import sys
import time

from shared_protocol.overlay import cyclon

from upsycle.sim import experiment
from upsycle.sim.cyclon_sim import BOOTSTRAPS, CyclonSim, Event, ScenarioError
from upsycle.sim.progress import Progress


def register(sub):
    p = sub.add_parser("sim", help="simulate protocols at scale")
    ps = p.add_subparsers(dest="sim_protocol", metavar="PROTOCOL")
    c = ps.add_parser("cyclon", help="CYCLON peer sampling overlay")
    c.add_argument("--nodes", type=int, required=True, help="number of nodes N")
    c.add_argument("--rounds", type=int, required=True, help="shuffle periods to simulate")
    c.add_argument("--view", type=int, default=cyclon.PROXY_VIEW, help="view size c (default %(default)s)")
    c.add_argument("--shuffle", type=int, default=cyclon.PROXY_SHUFFLE, help="shuffle length l (default %(default)s)")
    c.add_argument("--loss", type=float, default=0.0, help="message loss probability (default 0)")
    c.add_argument("--latency", default="0:0", metavar="MIN:MAX",
                   help="one-way latency in ms, uniform (default 0:0; the period is 1000 ms)")
    c.add_argument("--churn", type=float, default=0.0, metavar="FRACTION",
                   help="each round this fraction of live nodes crashes and as many new nodes join")
    c.add_argument("--event", action="append", default=[], metavar="KIND@ROUND[:VALUE]",
                   help="crash@R:F, leave@R:F (fraction <1 or count), rejoin@R, join@R:K, "
                        "partition@R:K (K groups), heal@R; repeatable")
    c.add_argument("--bootstrap", choices=BOOTSTRAPS, default="ring",
                   help="initial overlay: ring lattice, star, or random (default ring)")
    c.add_argument("--wire-sample", type=float, default=0.01, metavar="P",
                   help="fraction of messages that travel as encoded bytes (default 0.01; 1 = all)")
    c.add_argument("--jobs", type=int, default=2, help="processes: 2 measures on the second core (default 2)")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--no-plots", action="store_true", help="skip the PNG files")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--out", required=True, metavar="DIR", help="output directory")
    c.set_defaults(func=run_cyclon)
    _register_poldercast(ps)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _latency(text):
    try:
        lo, hi = text.split(":")
        return int(lo), int(hi)
    except ValueError:
        raise ScenarioError("latency must be MIN:MAX in ms, e.g. 5:50")


def run_cyclon(args):
    try:
        events = [Event.parse(e) for e in args.event]
        sim = CyclonSim(args.nodes, args.view, args.shuffle, seed=args.seed, loss=args.loss,
                        latency=_latency(args.latency), bootstrap=args.bootstrap,
                        wire_sample=args.wire_sample, events=events, churn=args.churn)
    except (ScenarioError, cyclon.CyclonConfigError) as e:
        print("upsycle sim cyclon: %s" % e, file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    progress = None if args.quiet else Progress("cyclon N=%d" % args.nodes)
    t0 = time.perf_counter()
    rows, snap, sim_s = experiment.run(sim, args.rounds, progress=progress, workers=max(1, args.jobs))
    if progress:
        progress.done()
    t1 = time.perf_counter()
    summary = experiment.summarize(sim, rows, snap)
    summary["config"] = {
        "nodes": args.nodes, "rounds": args.rounds, "view": args.view, "shuffle": args.shuffle,
        "loss": args.loss, "latency": args.latency, "churn": args.churn,
        "events": [repr(e) for e in events], "bootstrap": args.bootstrap,
        "wire_sample": args.wire_sample, "seed": args.seed,
    }
    write_csv(os.path.join(args.out, "metrics.csv"), rows)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True, default=_json_default)
        f.write("\n")
    plots = []
    if not args.no_plots:
        from upsycle.sim import plots as plots_mod
        title = "CYCLON N=%d c=%d l=%d%s" % (args.nodes, args.view, args.shuffle,
                                           ", loss %g" % args.loss if args.loss else "")
        plots = plots_mod.write_all(args.out, rows, summary, title)
    with open(os.path.join(args.out, "timing.json"), "w") as f:
        json.dump({"run_s": t1 - t0, "protocol_s": sim_s, "summary_s": time.perf_counter() - t1}, f, indent=1)
        f.write("\n")
    f = summary["final"]
    ref = summary["reference"]
    print("round %d: %d live nodes, APL %.3f (ln N/ln 2c %.3f, finite-size %.3f, Erdos-Renyi %.3f), "
          "clustering %.5f (2c/N %.5f), in-degree std %.2f max %d zero %d, components %d, dead links %d"
          % (f["round"], f["live"], f["apl"], ref["apl"], ref["apl_fronczak"], summary["erdos_renyi"]["apl"],
             f["clustering"],
             ref["clustering"], f["in_std"], f["in_max"], f["in_zero"], f["components"], f["dead_links"]))
    print("largest component after removing X%%: %s" % ", ".join(
        "%s%% -> %.2f%%" % (k, 100 * v) for k, v in sorted(summary["robustness"].items(), key=lambda kv: int(kv[0]))))
    for h in summary["healing"]:
        print("crash at round %d: %s" % (h["crash_round"], "no dead links after %d rounds" % h["rounds_to_heal"]
                                         if h["rounds_to_heal"] is not None else "dead links remain"))
    print("wrote %s (%.1f s)" % (", ".join([os.path.join(args.out, "metrics.csv"), os.path.join(args.out, "summary.json")]
                                           + plots), t1 - t0))
    return 0


def write_csv(path, rows):
    if not rows:
        return
    keys = list(rows[0].keys())
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow([_fmt(r[k]) for k in keys])


def _fmt(v):
    if isinstance(v, float):
        return "%.6g" % v
    return v


def _json_default(o):
    import numpy as np
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(type(o))


def _register_poldercast(ps):
    c = ps.add_parser("poldercast", help="PolderCast core overlay (CYCLON + VICINITY + Rings) and dissemination")
    c.add_argument("--nodes", type=int, required=True, help="number of proxies N")
    c.add_argument("--topics", type=int, required=True, help="number of topics T")
    c.add_argument("--zipf", type=float, default=2.3, help="Zipf exponent of topic popularity (default %(default)s)")
    c.add_argument("--subs-per-node", type=int, default=5, help="topics each proxy subscribes (default %(default)s)")
    c.add_argument("--rounds", type=int, required=True, help="gossip periods to simulate")
    c.add_argument("--fanout", type=int, default=2, help="dissemination fanout F (default %(default)s)")
    c.add_argument("--churn", type=float, default=0.0, metavar="FRACTION",
                   help="each round this fraction of live proxies crashes and as many new ones join")
    c.add_argument("--loss", type=float, default=0.0, help="message loss probability (default 0)")
    c.add_argument("--event", action="append", default=[], metavar="crash@ROUND:FRACTION",
                   help="crash a fraction (or a count) of the live proxies at the start of a round; repeatable")
    c.add_argument("--blip", type=float, default=0.0, metavar="EPSILON",
                   help="randomise profiles with BLIP at this epsilon (default 0: off)")
    c.add_argument("--pubs-per-round", type=int, default=20, help="publications per round (default %(default)s)")
    c.add_argument("--publish-from", type=int, default=None, metavar="ROUND",
                   help="first round with publications (default: 30, or the last round if fewer)")
    c.add_argument("--metrics-every", type=int, default=None, metavar="K",
                   help="rings/connectivity metrics every K rounds (default 1 up to 2,000 proxies, else 10)")
    c.add_argument("--wire-sample", type=float, default=0.01, metavar="P",
                   help="fraction of gossip messages that travel as encoded bytes (default 0.01)")
    c.add_argument("--warmup", type=int, default=5, metavar="ROUNDS",
                   help="a proxy counts as an intended subscriber this many rounds after it joined "
                        "(default %(default)s; hit_ratio_all counts every live subscriber)")
    c.add_argument("--no-urps", action="store_true", help="feed CYCLON without the URPS sampler")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--no-plots", action="store_true", help="skip the PNG files")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--out", required=True, metavar="DIR", help="output directory")
    c.set_defaults(func=run_poldercast)


def run_poldercast(args):
    from shared_protocol.overlay.common import OverlayConfigError
    from upsycle.sim import poldercast_metrics as pm
    from upsycle.sim.poldercast_sim import PolderCastSim
    publish_from = args.publish_from if args.publish_from is not None else min(30, args.rounds)
    every = args.metrics_every or (1 if args.nodes <= 2000 else 10)
    try:
        events = [Event.parse(e) for e in args.event]
        sim = PolderCastSim(args.nodes, args.topics, args.zipf, args.subs_per_node, fanout=args.fanout,
                            seed=args.seed, loss=args.loss, churn=args.churn, events=events,
                            blip_milli=int(round(args.blip * 1000)), wire_sample=args.wire_sample,
                            pubs_per_round=args.pubs_per_round, publish_from=publish_from,
                            use_urps=not args.no_urps, warmup=args.warmup)
    except (ScenarioError, OverlayConfigError, ValueError) as e:
        print("upsycle sim poldercast: %s" % e, file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    progress = None if args.quiet else Progress("poldercast N=%d" % args.nodes)
    t0 = time.perf_counter()
    # One JSON line per round as the run goes (rounds.jsonl), with the
    # process's CPU and peak memory so far: a run stopped before its end
    # still has its figures.
    import resource
    live_log = open(os.path.join(args.out, "rounds.jsonl"), "w")

    def on_row(row):
        use = resource.getrusage(resource.RUSAGE_SELF)
        live_log.write(json.dumps(dict(row, wall_s=round(time.perf_counter() - t0, 2),
                                       cpu_s=round(use.ru_utime + use.ru_stime, 2),
                                       max_rss_mb=round(use.ru_maxrss / 1024.0, 1))) + "\n")
        live_log.flush()

    try:
        rows = pm.run(sim, args.rounds, every, progress, on_row)
    finally:
        live_log.close()
    if progress:
        progress.done()
    t1 = time.perf_counter()
    summary = pm.summarize(sim, rows)
    summary["config"] = {
        "nodes": args.nodes, "topics": args.topics, "zipf": args.zipf, "subs_per_node": args.subs_per_node,
        "rounds": args.rounds, "fanout": args.fanout, "churn": args.churn, "loss": args.loss,
        "events": [repr(e) for e in events], "blip": args.blip, "pubs_per_round": args.pubs_per_round,
        "publish_from": publish_from, "metrics_every": every, "wire_sample": args.wire_sample,
        "urps": not args.no_urps, "warmup": args.warmup, "seed": args.seed,
    }
    pm.write_csv(os.path.join(args.out, "metrics.csv"), rows)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
        f.write("\n")
    files = [os.path.join(args.out, "metrics.csv"), os.path.join(args.out, "summary.json"),
             os.path.join(args.out, "rounds.jsonl")]
    files += pm.write_overlay(sim, args.out)
    if not args.no_plots:
        from upsycle.sim import poldercast_plots
        files += poldercast_plots.write_all(args.out, rows, summary, "PolderCast N=%d T=%d Zipf %g F=%d" % (
            args.nodes, args.topics, args.zipf, args.fanout))
    use = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.path.join(args.out, "timing.json"), "w") as f:
        # cpu_s and max_rss_mb cover the whole process (set-up, rounds,
        # files); max RSS is in KB on Linux.
        json.dump({"run_s": t1 - t0, "summary_s": time.perf_counter() - t1, "cpu_s": use.ru_utime + use.ru_stime,
                   "max_rss_mb": use.ru_maxrss / 1024.0}, f, indent=1)
        f.write("\n")
    fin = summary["final"]
    pub = summary["publications"]
    print("round %d: %d live proxies, rings convergence %.2f%% (100%% from round %s), topic-connectivity %.2f%%, "
          "distinct neighbours %.1f, gossip %.0f bytes/proxy/round"
          % (fin["round"], fin["live"], 100 * (fin["ring_convergence"] or 0), summary["ring_converged_round"],
             100 * (fin["topic_connectivity"] or 0), fin["distinct_neighbours"] or 0,
             summary["gossip_bytes_per_node_per_round"]))
    if fin["ring_convergence_settled"] is not None:
        print("proxies past their first %d rounds: rings convergence %.2f%%, topic-connectivity %.2f%%; "
              "ring neighbour lists holding a crashed proxy %.2f%%"
              % (args.warmup, 100 * fin["ring_convergence_settled"], 100 * fin["topic_connectivity_settled"],
                 100 * fin["ring_dead"]))
    if pub["publications"]:
        print("%d publications: hit ratio %.4f%% (worst %.2f%%; %.4f%% counting proxies in their first %d rounds), "
              "%.3f messages per subscriber, %d to non-subscribers, hops mean %.2f max %d (worst mean/bound %.2f)"
              % (pub["publications"], 100 * pub["hit_ratio"], 100 * pub["hit_ratio_min"],
                 100 * pub["hit_ratio_all"], args.warmup, pub["msgs_per_subscriber"],
                 pub["non_subscriber"], pub["hops_mean"], pub["hops_max"], pub["hops_bound_worst"]))
    for c in summary["crash_recovery"]:
        print("crash of %g at round %d: hit ratio 100%% again from round %s" % (
            c["fraction"], c["crash_round"], c["hit_ratio_100_from_round"]))
    print("wrote %s (%.1f s)" % (", ".join(files), t1 - t0))
    return 0
