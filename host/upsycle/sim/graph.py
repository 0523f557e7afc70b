"""Graph metrics of an overlay snapshot, with numpy (host only).

A snapshot is the directed graph "u has v in its view" over the live nodes,
numbered 0..n-1. Path length and clustering treat links as undirected (a
view entry lets either end reach the other once they shuffle); in-degree, the
load-balance measure, counts directed links.

- average path length: mean shortest-path hop count over ordered pairs that
  are connected, by breadth-first search from every node (exact) or from a
  sample of sources. The BFS is bit-parallel: 64 sources at once, one bit per
  source in a uint64 per node, so one level is a gather and an OR-reduce over
  the edge array instead of a Python loop per edge.
- clustering coefficient: Watts-Strogatz, the mean over nodes of (links among
  the node's neighbours) / (k (k - 1) / 2), 0 for k < 2, over every node or a
  sample of nodes.
- connected components: min-label propagation with pointer jumping.
"""
import math

import numpy as np

# Exact all-pairs path length up to this many nodes (the threshold:
# 2,000 nodes is 32 bit-parallel passes of a few levels, a few ms each).
EXACT_PATH_NODES = 2000
# Sources for the sampled path length above that: one bit-parallel batch.
# 64 BFS trees of 10,000 nodes are 640,000 pairs; the per-source means of a
# random graph vary by a few percent, so the sample mean is within ~0.5%
# (tests compare it with the exact value on 3,000 nodes).
SAMPLED_SOURCES = 64
# Clustering is computed over every node up to this size, else a sample.
EXACT_CLUSTERING_NODES = 2000
SAMPLED_CLUSTERING_NODES = 1000
_WORD = 64
_EULER_GAMMA = 0.5772156649015329


def _unique(keys):
    """Sorted distinct values. (np.unique in numpy 2.4 took 40x longer than
    sort-and-compare on 200,000 int64 keys here: measured, not assumed.)"""
    k = np.sort(keys)
    if len(k) < 2:
        return k
    keep = np.empty(len(k), dtype=bool)
    keep[0] = True
    np.not_equal(k[1:], k[:-1], out=keep[1:])
    return k[keep]


class Undirected:
    """An undirected simple graph on n nodes in CSR form."""

    def __init__(self, n, a, b):
        # a, b: endpoint arrays of unique edges with a < b
        self.n = n
        self.a = a
        self.b = b
        rows = np.concatenate((a, b))
        cols = np.concatenate((b, a))
        order = np.argsort(rows, kind="stable")
        self.indices = cols[order]
        self.deg = np.bincount(rows, minlength=n)
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.deg, out=self.indptr[1:])
        nz = self.deg > 0
        self._nz = nz
        self._starts = self.indptr[:-1][nz]

    @property
    def edges(self):
        return len(self.a)

    @classmethod
    def from_directed(cls, n, src, dst):
        """Drop self-loops, merge u->v and v->u into one undirected edge."""
        keep = src != dst
        s = src[keep].astype(np.int64)
        d = dst[keep].astype(np.int64)
        lo = np.minimum(s, d)
        hi = np.maximum(s, d)
        key = _unique(lo * n + hi)
        return cls(n, key // n, key % n)

    def _gather_reduce(self, values, ufunc, empty):
        out = np.full(self.n, empty, dtype=values.dtype)
        if len(self.indices):
            out[self._nz] = ufunc.reduceat(values[self.indices], self._starts)
        return out

    def mean_degree(self):
        return 2.0 * self.edges / self.n if self.n else 0.0

    # --- path length ---------------------------------------------------

    def path_length(self, rng=None, sources=None):
        """(average path length, exact?, fraction of pairs connected).

        Exact when n <= EXACT_PATH_NODES or rng is None, else from
        ``sources`` (default SAMPLED_SOURCES) random sources drawn from rng
        (a numpy Generator).
        """
        n = self.n
        if n < 2:
            return 0.0, True, 1.0
        exact = n <= EXACT_PATH_NODES or rng is None
        if exact:
            src = np.arange(n)
        else:
            k = min(n, sources or SAMPLED_SOURCES)
            src = rng.choice(n, size=k, replace=False)
        total = 0
        pairs = 0
        for s0 in range(0, len(src), _WORD):
            batch = src[s0:s0 + _WORD]
            t, p = self._bfs_batch(batch)
            total += t
            pairs += p
        possible = len(src) * (n - 1)
        apl = total / pairs if pairs else float("inf")
        return apl, exact, pairs / possible

    def _bfs_batch(self, batch):
        n = self.n
        visited = np.zeros(n, dtype=np.uint64)
        bits = np.left_shift(np.uint64(1), np.arange(len(batch), dtype=np.uint64))
        np.bitwise_or.at(visited, batch, bits)
        frontier = visited.copy()
        total = 0
        pairs = 0
        dist = 0
        zero = np.uint64(0)
        while True:
            dist += 1
            reached = self._gather_reduce(frontier, np.bitwise_or, zero)
            new = reached & ~visited
            cnt = int(np.bitwise_count(new).sum())
            if cnt == 0:
                break
            total += dist * cnt
            pairs += cnt
            visited |= new
            frontier = new
        return total, pairs

    # --- clustering ----------------------------------------------------

    def clustering(self, rng=None):
        """(mean local clustering coefficient, exact?).

        Links among a node's neighbours are counted with a dense adjacency
        bitset: for each edge (v, u) of a measured node v, popcount(N(v) AND
        N(u)) is the number of v's neighbours linked to u; the sum over u
        counts every link among N(v) twice.
        """
        n = self.n
        if n == 0:
            return 0.0, True
        exact = n <= EXACT_CLUSTERING_NODES or rng is None
        if exact:
            nodes = np.arange(n)
        else:
            nodes = np.sort(rng.choice(n, size=SAMPLED_CLUSTERING_NODES, replace=False))
        words = (n + _WORD - 1) // _WORD
        bits = np.zeros(n * words, dtype=np.uint64)
        rows = np.repeat(np.arange(n, dtype=np.int64), self.deg)
        cols = self.indices.astype(np.int64)
        # (row, column) pairs are unique, so adding the bits is an OR.
        np.add.at(bits, rows * words + (cols >> 6), np.left_shift(np.uint64(1), (cols & 63).astype(np.uint64)))
        bits = bits.reshape(n, words)
        deg = self.deg[nodes]
        # the measured nodes' edges, as (position in nodes, neighbour)
        starts = self.indptr[nodes]
        ev = np.repeat(np.arange(len(nodes)), deg)
        offs = np.arange(len(ev)) - np.repeat(np.cumsum(deg) - deg, deg)
        eu = self.indices[np.repeat(starts, deg) + offs]
        links2 = np.zeros(len(nodes), dtype=np.float64)
        chunk = max(1, (1 << 22) // max(1, words))
        vn = nodes[ev]
        for s0 in range(0, len(ev), chunk):
            common = np.bitwise_count(bits[vn[s0:s0 + chunk]] & bits[eu[s0:s0 + chunk]]).sum(axis=1)
            links2 += np.bincount(ev[s0:s0 + chunk], weights=common, minlength=len(nodes))
        k = deg.astype(np.float64)
        ok = deg >= 2
        coef = np.zeros(len(nodes))
        coef[ok] = links2[ok] / (k[ok] * (k[ok] - 1))
        return float(coef.mean()), exact

    # --- components ----------------------------------------------------

    def components(self):
        """Component label per node (the smallest node number in it)."""
        labels = np.arange(self.n, dtype=np.int64)
        big = np.iinfo(np.int64).max
        while True:
            m = np.minimum(labels, self._gather_reduce(labels, np.minimum, big))
            m = m[m]
            m = m[m]
            if np.array_equal(m, labels):
                return labels
            labels = m

    def component_sizes(self):
        """Sizes of the components, largest first."""
        if self.n == 0:
            return np.zeros(0, dtype=np.int64)
        c = np.bincount(self.components())
        c = c[c > 0]
        return np.sort(c)[::-1]

    def without(self, removed_mask):
        """The subgraph induced by the nodes not in removed_mask."""
        keep = ~removed_mask
        remap = np.cumsum(keep) - 1
        e = keep[self.a] & keep[self.b]
        return Undirected(int(keep.sum()), remap[self.a[e]], remap[self.b[e]])


def erdos_renyi(n, m, rng):
    """G(n, m): m distinct random undirected edges, no self-loops."""
    if n < 2:
        return Undirected(n, np.zeros(0, np.int64), np.zeros(0, np.int64))
    m = min(m, n * (n - 1) // 2)
    keys = np.zeros(0, dtype=np.int64)
    while len(keys) < m:
        want = int((m - len(keys)) * 1.1) + 16
        u = rng.integers(0, n, size=want)
        v = rng.integers(0, n, size=want)
        ok = u != v
        lo = np.minimum(u[ok], v[ok])
        hi = np.maximum(u[ok], v[ok])
        new = _unique(np.concatenate((keys, lo * n + hi)))
        if len(new) > m:
            # keep a random m of them, not the smallest keys
            new = rng.choice(new, size=m, replace=False)
            new.sort()
        keys = new
    return Undirected(n, keys // n, keys % n)


def indegree_stats(n, dst):
    """Mean, std, min, max, count of zeros of the in-degree over n nodes."""
    if n == 0:
        return {"in_mean": 0.0, "in_std": 0.0, "in_min": 0, "in_max": 0, "in_zero": 0}
    d = np.bincount(dst, minlength=n)
    return {
        "in_mean": float(d.mean()),
        "in_std": float(d.std()),
        "in_min": int(d.min()),
        "in_max": int(d.max()),
        "in_zero": int((d == 0).sum()),
    }


def robustness(graph, fractions, rng, trials=3):
    """For each removed fraction: mean over trials of (largest component /
    survivors) after removing that fraction of nodes uniformly at random."""
    out = {}
    n = graph.n
    for f in fractions:
        k = int(round(n * f))
        acc = 0.0
        for _ in range(trials):
            mask = np.zeros(n, dtype=bool)
            mask[rng.choice(n, size=k, replace=False)] = True
            sub = graph.without(mask)
            sizes = sub.component_sizes()
            acc += (sizes[0] / sub.n) if sub.n else 0.0
        out[f] = acc / trials
    return out


def random_graph_reference(n, c):
    """The random-graph values the issue compares CYCLON with:
    path length ln N / ln(2c) (2c: mean undirected degree, each node having c
    out-links and about c in-links), clustering 2c / N, and the in-degree
    standard deviation of c random out-links per node, sqrt(c (1 - c/N))."""
    if n < 2:
        return {"apl": 0.0, "apl_fronczak": 0.0, "clustering": 0.0, "in_std": 0.0}
    return {
        "apl": math.log(n) / math.log(2 * c),
        # ln N / ln k is the leading term only; for a random graph of mean
        # degree k the path length is (ln N - gamma) / ln k + 1/2 (Fronczak,
        # Fronczak, Holyst, Phys. Rev. E 70, 056110, 2004), which is what
        # graphs of this density actually measure.
        "apl_fronczak": (math.log(n) - _EULER_GAMMA) / math.log(2 * c) + 0.5,
        "clustering": 2.0 * c / n,
        "in_std": math.sqrt(c * (1 - c / (n - 1))),
    }
