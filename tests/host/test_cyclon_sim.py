"""The CYCLON simulator and the overlay properties the paper claims, at
N = 1,000, c = 20, l = 8 (tools/bench/bench_cyclon.py and the report repeat
them at N = 10,000)."""
import json
import math
import os

import numpy as np
import pytest

from shared_protocol.overlay import cyclon
from upsycle import cli
from upsycle.sim import experiment, graph
from upsycle.sim.cyclon_sim import CyclonSim, Event, ScenarioError

N = 1000
C = 20
L = 8


@pytest.fixture(scope="module")
def clean_run():
    """Ring-lattice bootstrap, 50 rounds, then 50% of the nodes crash at
    the start of round 51 and the run goes on for 2c rounds."""
    sim = CyclonSim(N, C, L, seed=1, bootstrap="ring", events=[Event("crash", 51, 0.5)])
    rows, snap, _ = experiment.run(sim, 50)
    summary = experiment.summarize(sim, rows, snap)
    more, snap2, _ = experiment.run(sim, 2 * C, measure_start=False)
    return sim, rows, summary, more


@pytest.fixture(scope="module")
def lossy_run():
    sim = CyclonSim(N, C, L, seed=2, bootstrap="ring", loss=0.05)
    rows, snap, _ = experiment.run(sim, 50)
    return sim, rows, experiment.summarize(sim, rows, snap)


def _check_random_graph_like(row, summary):
    ref = graph.random_graph_reference(N, C)
    er = summary["erdos_renyi"]
    # Path length. The target "within 10% of ln N / ln 2c" is out of reach
    # for ANY random graph of this density: an Erdos-Renyi graph with the
    # same node and edge count, built in the same run, is itself ~15% above
    # the formula. We hold CYCLON to that graph instead, and pin the fact.
    assert er["apl"] > 1.1 * ref["apl"], (er["apl"], ref["apl"])
    assert abs(row["apl"] - er["apl"]) <= 0.02 * er["apl"], (row["apl"], er["apl"])
    # and both agree with the finite-size formula for random graphs
    assert abs(row["apl"] - ref["apl_fronczak"]) <= 0.05 * ref["apl_fronczak"]
    assert row["apl_exact"] == 1 and row["pairs_connected"] == 1.0
    assert row["clustering"] <= 3 * ref["clustering"], row["clustering"]
    assert row["in_std"] <= math.sqrt(C), row["in_std"]
    assert row["in_zero"] == 0
    assert row["components"] == 1


def test_ring_lattice_becomes_a_random_graph_in_50_rounds(clean_run):
    sim, rows, summary, _ = clean_run
    assert rows[0]["clustering"] > 0.7       # the lattice starts highly clustered
    assert rows[0]["apl"] > 10
    row = [r for r in rows if r["round"] == 50][0]
    _check_random_graph_like(row, summary)
    assert row["empty_slots"] == 0 and row["dead_links"] == 0
    assert summary["converged_round"] is not None and summary["converged_round"] <= 30


def test_largest_component_after_removing_80_percent(clean_run):
    _, _, summary, _ = clean_run
    assert summary["robustness"]["80"] >= 0.99, summary["robustness"]
    assert summary["robustness"]["50"] == 1.0


def test_dead_links_gone_within_2c_rounds_after_50_percent_crash(clean_run):
    sim, _, _, more = clean_run
    assert more[0]["round"] == 51 and more[0]["live"] == N // 2
    assert more[0]["dead_links"] > 1000
    assert more[-1]["round"] == 50 + 2 * C
    assert more[-1]["dead_links"] == 0, [r["dead_links"] for r in more]


def test_five_percent_loss_keeps_the_properties(lossy_run):
    sim, rows, summary = lossy_run
    row = [r for r in rows if r["round"] == 50][0]
    _check_random_graph_like(row, summary)
    assert summary["robustness"]["80"] >= 0.99
    lost = row["msg_lost"] / row["msg_sent"]
    assert 0.04 < lost < 0.06, lost


def test_wire_bytes_and_message_objects_decide_the_same():
    a = CyclonSim(300, C, L, seed=5, wire_sample=0.0, loss=0.02)
    b = CyclonSim(300, C, L, seed=5, wire_sample=1.0, loss=0.02)
    for _ in range(10):
        a.run_round()
        b.run_round()
    assert a.wire_msgs == 0 and b.wire_msgs > 5000
    assert a.views_digest() == b.views_digest()


def test_same_seed_same_run_other_seed_other_run():
    def digest(seed):
        s = CyclonSim(200, 10, 4, seed=seed, loss=0.05, latency=(5, 80),
                      events=[Event.parse("crash@3:0.2"), Event.parse("join@4:20")], churn=0.01)
        for _ in range(8):
            s.run_round()
        return s.views_digest()
    assert digest(3) == digest(3)
    assert digest(3) != digest(4)


def test_star_bootstrap_converges():
    sim = CyclonSim(500, C, L, seed=3, bootstrap="star")
    rows, snap, _ = experiment.run(sim, 40)
    summary = experiment.summarize(sim, rows, snap)
    assert rows[0]["in_max"] == 499         # everybody points at the hub
    assert summary["converged_round"] is not None, rows[-1]
    last = rows[-1]
    assert last["in_std"] <= math.sqrt(C) and last["empty_slots"] == 0


def test_latency_churn_join_leave_rejoin():
    sim = CyclonSim(400, C, L, seed=4, latency=(10, 150), churn=0.01,
                    events=[Event.parse("leave@5:0.1"), Event.parse("rejoin@10"), Event.parse("join@12:50")])
    rows, snap, _ = experiment.run(sim, 25)
    by = dict((r["round"], r) for r in rows)
    assert by[5]["live"] < by[4]["live"]            # 10% left
    assert by[5]["absent_links"] > 0
    assert by[10]["live"] > by[9]["live"]           # they came back
    assert by[12]["live"] == by[11]["live"] + 50    # 50 joined (churn keeps the count)
    last = rows[-1]
    # only nodes that joined this very round may be unknown to everyone yet
    assert last["components"] == 1 and last["in_zero"] <= round(0.01 * last["live"])
    assert sim.errors.get(cyclon.E_UNKNOWN, 0) == 0  # no reply later than the timeout


def test_partition_cuts_messages_and_heal_restores_them():
    sim = CyclonSim(300, C, L, seed=6, events=[Event.parse("partition@3:2"), Event.parse("heal@6")])
    rows, _, _ = experiment.run(sim, 12)
    by = dict((r["round"], r) for r in rows)
    assert by[2]["msg_cut"] == 0
    assert by[5]["msg_cut"] > 0.3 * 300 * 2      # about half of all exchanges cross
    assert by[12]["msg_cut"] == by[5]["msg_cut"]  # nothing cut after healing
    assert by[12]["components"] == 1
    # A long partition splits the overlay itself: cross-group entries are
    # contacted, time out and are dropped. (CYCLON alone cannot re-merge
    # two such halves; a seed or a LAN announcement must bridge them.)
    long = CyclonSim(300, C, L, seed=6, events=[Event.parse("partition@3:2")])
    rows, _, _ = experiment.run(long, 60)
    assert rows[-1]["components"] == 2


def test_bad_scenarios_are_refused():
    for text in ("crash", "crash@x:1", "explode@3:1", "crash@5"):
        with pytest.raises(ScenarioError):
            Event.parse(text)
    with pytest.raises(ScenarioError):
        CyclonSim(1)
    with pytest.raises(ScenarioError):
        CyclonSim(10, bootstrap="tree")
    with pytest.raises(ScenarioError):
        CyclonSim(10, latency=(0, 1000))


def _graph(n, edges):
    a = np.array([min(e) for e in edges], dtype=np.int64)
    b = np.array([max(e) for e in edges], dtype=np.int64)
    return graph.Undirected.from_directed(n, a, b)


def _python_apl(n, edges):
    adj = [set() for _ in range(n)]
    for u, v in edges:
        adj[u].add(v)
        adj[v].add(u)
    tot = pairs = 0
    for s in range(n):
        dist = {s: 0}
        front = [s]
        while front:
            nxt = []
            for u in front:
                for v in adj[u]:
                    if v not in dist:
                        dist[v] = dist[u] + 1
                        nxt.append(v)
            front = nxt
        tot += sum(dist.values())
        pairs += len(dist) - 1
    return tot / pairs


def test_graph_metrics_on_known_graphs():
    # complete graph: path length 1, clustering 1
    k6 = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    g = _graph(6, k6)
    assert g.path_length()[0] == 1.0 and g.clustering()[0] == 1.0
    # ring lattice with K = 2k neighbours: clustering 3(K-2) / (4(K-1))
    n, k = 200, 5
    ring = [(i, (i + d) % n) for i in range(n) for d in range(1, k + 1)]
    g = _graph(n, ring)
    assert abs(g.clustering()[0] - 3 * (2 * k - 2) / (4 * (2 * k - 1))) < 1e-12
    assert abs(g.path_length()[0] - _python_apl(n, ring)) < 1e-12
    # components: 100 nodes, 50 nodes, a pair and an isolated node; more
    # than 64 BFS sources (several bit-parallel batches)
    rng = np.random.default_rng(9)
    edges = set()
    for lo, hi, m in ((0, 100, 300), (100, 150, 120)):
        while len(edges) < m + (300 if lo else 0):
            u, v = sorted(rng.integers(lo, hi, 2).tolist())
            if u != v:
                edges.add((u, v))
    edges = sorted(edges) + [(150, 151)]
    g = _graph(153, edges)
    assert abs(g.path_length()[0] - _python_apl(153, edges)) < 1e-12
    sizes = g.component_sizes().tolist()
    assert sizes == [100, 50, 2, 1], sizes
    # sampled measures stay close to exact ones
    er = graph.erdos_renyi(3000, 30000, rng)
    exact, _, _ = graph.Undirected.path_length(er)
    sampled, was_exact, _ = er.path_length(rng)
    assert not was_exact and abs(sampled - exact) < 0.01 * exact
    assert er.edges == 30000


def test_cli_writes_metrics_plots_and_is_deterministic(tmp_path, capsys):
    outs = []
    for name, jobs in (("a", "2"), ("b", "1")):
        out = tmp_path / name
        rc = cli.main(["sim", "cyclon", "--nodes", "300", "--rounds", "12", "--view", "10", "--shuffle", "4",
                       "--loss", "0.05", "--event", "crash@8:0.5", "--seed", "7", "--jobs", jobs,
                       "--out", str(out)] + (["--no-plots"] if name == "b" else []))
        assert rc == 0
        outs.append(out)
    text = capsys.readouterr()
    assert "largest component after removing" in text.out
    assert "12/12 rounds" in text.err                     # the progress bar
    a, b = outs
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    lines = (a / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("round,live,in_mean,in_std")
    assert len(lines) == 1 + 13
    summary = json.loads((a / "summary.json").read_text())
    assert summary["config"]["nodes"] == 300
    assert summary["healing"][0]["crash_round"] == 8
    for png in ("path_length.png", "clustering.png", "indegree.png", "indegree_histogram.png",
                "robustness.png", "dead_links.png"):
        data = (a / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    assert not os.path.exists(b / "path_length.png")
    rc = cli.main(["sim", "cyclon", "--nodes", "10", "--rounds", "1", "--event", "boom@1", "--out", str(tmp_path / "c")])
    assert rc == 2
