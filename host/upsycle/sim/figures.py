"""The one way the simulators draw a figure: matplotlib with the Agg backend
(no display on a Pi or in CI), 6x4 inches at 100 dpi, one PNG per figure,
the paths written kept in order for the run's summary."""
import os


class Figures:
    def __init__(self, out_dir, title):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        self.plt = plt
        self.out_dir = out_dir
        self.title = title
        self.paths = []

    def new(self):
        return self.plt.subplots(figsize=(6, 4))

    def save(self, fig, ax, name, xlabel, ylabel=None, title=None, legend=True):
        ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.set_title(title or self.title)
        if legend:
            ax.legend()
        p = os.path.join(self.out_dir, name)
        fig.tight_layout()
        fig.savefig(p, dpi=100)
        self.plt.close(fig)
        self.paths.append(p)
