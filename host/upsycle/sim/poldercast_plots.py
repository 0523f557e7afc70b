"""PNG plots of a PolderCast run (matplotlib, Agg backend)."""
import os


def write_all(out_dir, rows, summary, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []

    def save(fig, name):
        p = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)

    def series(key):
        xs = [r["round"] for r in rows if r.get(key) is not None]
        return xs, [r[key] for r in rows if r.get(key) is not None]

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("ring_convergence", "rings convergence"), ("topic_connectivity", "topic-connectivity"),
                       ("hit_ratio", "hit ratio"), ("hit_ratio_min", "worst publication's hit ratio")):
        xs, ys = series(key)
        if xs:
            ax.plot(xs, [100 * y for y in ys], label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("%")
    ax.set_ylim(0, 101)
    ax.set_title(title)
    ax.legend()
    save(fig, "convergence.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("msgs_per_subscriber", "messages per subscriber"), ("hops_mean", "hops (mean)"),
                       ("hops_max", "hops (max)")):
        xs, ys = series(key)
        if xs:
            ax.plot(xs, ys, label=label)
    ax.set_xlabel("round")
    ax.set_title(title)
    ax.legend()
    save(fig, "dissemination.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = series("gossip_bytes_per_node")
    ax.plot(xs, ys, label="gossip bytes / proxy / round")
    xs, ys = series("distinct_neighbours")
    ax2 = ax.twinx()
    ax2.plot(xs, ys, color="tab:orange", label="distinct neighbours")
    ax.set_xlabel("round")
    ax.set_ylabel("bytes")
    ax2.set_ylabel("neighbours")
    ax.set_title(title)
    fig.legend(loc="lower right")
    save(fig, "overhead.png")
    return paths
