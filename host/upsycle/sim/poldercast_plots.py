"""PNG plots of a PolderCast run."""
from upsycle.sim.figures import Figures


def write_all(out_dir, rows, summary, title):
    figs = Figures(out_dir, title)

    def series(key):
        xs = [r["round"] for r in rows if r.get(key) is not None]
        return xs, [r[key] for r in rows if r.get(key) is not None]

    def lines(ax, keys, scale=1):
        for key, label in keys:
            xs, ys = series(key)
            if xs:
                ax.plot(xs, [scale * y for y in ys], label=label)

    fig, ax = figs.new()
    lines(ax, (("ring_convergence", "rings convergence"), ("topic_connectivity", "topic-connectivity"),
               ("hit_ratio", "hit ratio"), ("hit_ratio_min", "worst publication's hit ratio")), 100)
    ax.set_ylim(0, 101)
    figs.save(fig, ax, "convergence.png", "round", "%")

    fig, ax = figs.new()
    lines(ax, (("msgs_per_subscriber", "messages per subscriber"), ("hops_mean", "hops (mean)"),
               ("hops_max", "hops (max)")))
    figs.save(fig, ax, "dissemination.png", "round")

    fig, ax = figs.new()
    lines(ax, (("gossip_bytes_per_node", "gossip bytes / proxy / round"),))
    ax2 = ax.twinx()
    xs, ys = series("distinct_neighbours")
    ax2.plot(xs, ys, color="tab:orange", label="distinct neighbours")
    ax2.set_ylabel("neighbours")
    fig.legend(loc="lower right")
    figs.save(fig, ax, "overhead.png", "round", "bytes", legend=False)
    return figs.paths
