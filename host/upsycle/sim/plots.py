"""PNG plots of a CYCLON run, of the kinds the paper draws for its experiments:
metrics against rounds, the in-degree distribution, and the largest
component against the share of nodes removed."""
from upsycle.sim.figures import Figures


def write_all(out_dir, rows, summary, title):
    figs = Figures(out_dir, title)
    rounds = [r["round"] for r in rows]
    ref = summary["reference"]
    er = summary["erdos_renyi"]

    fig, ax = figs.new()
    ax.plot(rounds, [r["apl"] for r in rows], label="CYCLON")
    ax.axhline(ref["apl"], color="gray", linestyle="--", label="ln N / ln 2c = %.2f" % ref["apl"])
    ax.axhline(ref["apl_fronczak"], color="red", linestyle="-.",
               label="(ln N - 0.577) / ln 2c + 1/2 = %.2f" % ref["apl_fronczak"])
    ax.axhline(er["apl"], color="green", linestyle=":", label="Erdos-Renyi, same edges = %.2f" % er["apl"])
    ax.set_yscale("log")
    figs.save(fig, ax, "path_length.png", "round", "average path length")

    fig, ax = figs.new()
    ax.plot(rounds, [r["clustering"] for r in rows], label="CYCLON")
    ax.axhline(ref["clustering"], color="gray", linestyle="--", label="2c / N = %.4f" % ref["clustering"])
    ax.axhline(er["clustering"], color="green", linestyle=":", label="Erdos-Renyi = %.4f" % er["clustering"])
    ax.set_yscale("log")
    figs.save(fig, ax, "clustering.png", "round", "clustering coefficient")

    fig, ax = figs.new()
    for key, label in (("in_std", "std"), ("in_max", "max"), ("in_min", "min")):
        ax.plot(rounds, [r[key] for r in rows], label=label)
    ax.axhline(ref["in_std"], color="gray", linestyle="--", label="random graph std = %.2f" % ref["in_std"])
    figs.save(fig, ax, "indegree.png", "round", "in-degree")

    fig, ax = figs.new()
    ax.plot(rounds, [r["dead_links"] for r in rows], label="dead links")
    ax.plot(rounds, [r["empty_slots"] for r in rows], label="empty view slots")
    figs.save(fig, ax, "dead_links.png", "round", "count")

    hist = summary["indegree_histogram"]
    if hist:
        fig, ax = figs.new()
        counts = {}
        for d in hist:
            counts[d] = counts.get(d, 0) + 1
        xs = sorted(counts)
        ax.bar(xs, [counts[x] for x in xs])
        figs.save(fig, ax, "indegree_histogram.png", "in-degree", "nodes",
                  title="%s, round %d" % (title, summary["rounds"]), legend=False)

    fig, ax = figs.new()
    xs = sorted(int(k) for k in summary["robustness"])
    ax.plot(xs, [100 * summary["robustness"][str(x)] for x in xs], marker="o", label="CYCLON")
    ax.plot(xs, [100 * summary["robustness_erdos_renyi"][str(x)] for x in xs], marker="x",
            linestyle=":", label="Erdos-Renyi")
    figs.save(fig, ax, "robustness.png", "nodes removed (%)", "largest component (% of survivors)")
    return figs.paths
