"""PNG plots of a CYCLON run, of the kinds the paper draws for its experiments:
metrics against rounds, the in-degree distribution, and the largest
component against the share of nodes removed. matplotlib, Agg backend (no
display needed)."""
import os


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_all(out_dir, rows, summary, title):
    plt = _plt()
    paths = []
    rounds = [r["round"] for r in rows]

    def save(fig, name):
        p = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)

    ref = summary["reference"]
    er = summary["erdos_renyi"]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, [r["apl"] for r in rows], label="CYCLON")
    ax.axhline(ref["apl"], color="gray", linestyle="--", label="ln N / ln 2c = %.2f" % ref["apl"])
    ax.axhline(ref["apl_fronczak"], color="red", linestyle="-.",
               label="(ln N - 0.577) / ln 2c + 1/2 = %.2f" % ref["apl_fronczak"])
    ax.axhline(er["apl"], color="green", linestyle=":", label="Erdos-Renyi, same edges = %.2f" % er["apl"])
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("average path length")
    ax.set_title(title)
    ax.legend()
    save(fig, "path_length.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, [r["clustering"] for r in rows], label="CYCLON")
    ax.axhline(ref["clustering"], color="gray", linestyle="--", label="2c / N = %.4f" % ref["clustering"])
    ax.axhline(er["clustering"], color="green", linestyle=":", label="Erdos-Renyi = %.4f" % er["clustering"])
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("clustering coefficient")
    ax.set_title(title)
    ax.legend()
    save(fig, "clustering.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, [r["in_std"] for r in rows], label="std")
    ax.plot(rounds, [r["in_max"] for r in rows], label="max")
    ax.plot(rounds, [r["in_min"] for r in rows], label="min")
    ax.axhline(ref["in_std"], color="gray", linestyle="--", label="random graph std = %.2f" % ref["in_std"])
    ax.set_xlabel("round")
    ax.set_ylabel("in-degree")
    ax.set_title(title)
    ax.legend()
    save(fig, "indegree.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, [r["dead_links"] for r in rows], label="dead links")
    ax.plot(rounds, [r["empty_slots"] for r in rows], label="empty view slots")
    ax.set_xlabel("round")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    save(fig, "dead_links.png")

    hist = summary["indegree_histogram"]
    if hist:
        fig, ax = plt.subplots(figsize=(6, 4))
        counts = {}
        for d in hist:
            counts[d] = counts.get(d, 0) + 1
        xs = sorted(counts)
        ax.bar(xs, [counts[x] for x in xs])
        ax.set_xlabel("in-degree")
        ax.set_ylabel("nodes")
        ax.set_title("%s, round %d" % (title, summary["rounds"]))
        save(fig, "indegree_histogram.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = sorted(int(k) for k in summary["robustness"])
    ax.plot(xs, [100 * summary["robustness"][str(x)] for x in xs], marker="o", label="CYCLON")
    ax.plot(xs, [100 * summary["robustness_erdos_renyi"][str(x)] for x in xs], marker="x",
            linestyle=":", label="Erdos-Renyi")
    ax.set_xlabel("nodes removed (%)")
    ax.set_ylabel("largest component (% of survivors)")
    ax.set_title(title)
    ax.legend()
    save(fig, "robustness.png")
    return paths
