"""The benchmark harness (tools/bench/): what it must get right for its
figures to mean anything. No performance is asserted here."""
import importlib
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools", "bench")


def _bench(name):
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return importlib.import_module(name)


def test_the_load_generator_imports():
    """loadgen.py drives every proxy benchmark; a name moved in the shared
    code (the Noise errors left noise/udp.py) broke all of them at once."""
    lg = _bench("loadgen")
    assert lg.HandshakeTimedOut is not None and lg.SessionUnknown is not None


def test_rounds_alternate_which_system_runs_first():
    bp = _bench("bench_proxy")
    order = []
    for k in range(4):
        bp.in_turn(k, lambda: order.append("mosquitto"), lambda: order.append("upsycle"))
    assert order == ["mosquitto", "upsycle", "upsycle", "mosquitto"] * 2


def test_the_latency_anchor_is_mosquittos_better_driver():
    """A driver slow to stamp or read makes Mosquitto look slower than it
    is: the latency ratio is taken against the lower of its two p99s."""
    bp = _bench("bench_proxy")
    c = {"p50": 25.0, "p99": 385.0, "ccpu": 1.0, "n": 10}
    g = {"p50": 0.3, "p99": 4.0, "ccpu": 1.0, "n": 10}
    assert bp.lat_anchor({"c": c, "g": g}) == dict(g, driver="loadgen MQTT")
    assert bp.lat_anchor({"c": g, "g": c}) == dict(g, driver="C clients")


def test_the_rig_reads_the_qstr_pools_as_micropython_grows_them():
    # py/qstr.c: the first pool of names has 20 slots, each next one twice
    # the last; 1,501 names on the rig took 7 pools, the last of 1,280
    br = _bench("bench_rig")
    line = br.qstr_line("qstr pool: n_pool=7, n_qstr=1501, n_str_data_bytes=17308, n_total_bytes=35308")
    assert "1501 in 7 pools of 2540 slots" in line and "1260 names or fewer" in line and "(1280 slots)" in line
    assert "none outside" in br.qstr_line("qstr pool: n_pool=0, n_qstr=0, n_str_data_bytes=0, n_total_bytes=0")
