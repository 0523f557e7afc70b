"""The field demo's scenario end to end: a real proxy, three virtual boards
flashed through `upsycle flash` (the real mpremote), a private topic, one
board powered off and on again, a host subscriber."""
import json
import os

from upsycle import field_demo


def _alive(pid):
    try:
        os.killpg(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def test_field_demo_every_reading_everywhere(tmp_path):
    readings = 5
    s = field_demo.run(readings=readings, interval=1, offline_s=4, keep=str(tmp_path), out=print)
    try:
        assert s["converged"], s["board_lines"]
        assert s["ok"] and s["lost"] == 0
        assert s["published"] == s["delivered"] == 3 * readings
        # Every board's replica file encodes to the subscriber's bytes, and
        # that state holds every reading of every board.
        for b, state in s["board_states"].items():
            assert state == s["state"], b
        from shared_protocol.dmc.replica import Replica
        from shared_protocol.wire import cbor
        r = Replica(b"check")
        r.merge_snapshot(s["state"])
        log = r.obj(4, field_demo.LOG_KEY)
        per = {}
        for e in log.entries():
            per[e[1]] = per.get(e[1], 0) + 1
        assert sorted(per.values()) == [readings] * 3
        # The proxy stored ciphertext only: no op bytes, no log name, no value.
        blob = b""
        for d, _, files in os.walk(s["proxy_db"]):
            for f in files:
                with open(os.path.join(d, f), "rb") as fh:
                    blob += fh.read()
        assert len(blob) > 0
        assert len(s["ops"]) == 3 * readings
        for op in s["ops"]:
            assert op not in blob
        assert b"temp" not in blob
        # Every board was flashed with the proxy's key pinned: the config on
        # its flash (the virtual board's mirror) names the key the proxy made,
        # and the boards' links say so.
        from upsycle import identity
        key = identity.public_key(identity.proxy_key(s["proxy_db"])).hex()
        assert s["proxy_key"] == key
        for b in ("node1", "node2", "node3"):
            with open(os.path.join(s["work"], b, "config.json")) as f:
                cfg = json.load(f)
            assert cfg["proxies"] and all(p.endswith("@" + key) for p in cfg["proxies"]), (b, cfg["proxies"])
            lines = s["board_lines"][b]
            assert any("Noise XX, pinned key" in l for l in lines), (b, lines[-20:])
            assert any("secure link up, proxy key " + key[:16] in l for l in lines), (b, lines[-20:])
        # node3 really lost power and came back: two boots on its log.
        boots = [l for l in s["board_lines"]["node3"] if "node up" in l]
        assert len(boots) >= 2
        assert s["elapsed_s"] < 120
    finally:
        for pid in s["pids"]:
            assert not _alive(pid), "process group %d left running" % pid


def test_field_demo_at_two_sites_loses_nothing_across_a_cut_link(tmp_path):
    import sqlite3
    readings = 4
    s = field_demo.run(readings=readings, interval=1, offline_s=4, keep=str(tmp_path), out=print, sites=2)
    try:
        assert s["ok"] and s["lost"] == 0 and s["converged"], s["board_lines"]
        assert s["published"] == s["delivered"] == 3 * readings
        for b, state in s["board_states"].items():
            assert state == s["state"], b
        # Site B's proxy holds every board's reading (sealed), carried over
        # the federation link: the subscriber talked to site B only.
        db = sqlite3.connect(os.path.join(s["work"], "proxy-b", "proxy.sqlite3"))
        n = db.execute("SELECT COUNT(*) FROM messages WHERE topic=?", (s["topic"],)).fetchone()[0]
        db.close()
        assert n >= 3 * readings
    finally:
        for pid in s["pids"]:
            assert not _alive(pid), "process group %d left running" % pid


def test_field_demo_at_two_sites_and_home_loses_nothing_across_a_cut_link(tmp_path):
    """Site A -> home -> site B (each site lists only home): the link between
    A and home is cut while node3 is off; both subscribers get every reading."""
    import sqlite3
    readings = 4
    s = field_demo.run(readings=readings, interval=1, offline_s=4, keep=str(tmp_path), out=print, sites=3)
    try:
        assert s["ok"] and s["converged"], s["board_lines"]
        assert s["lost"] == 0 and s["lost_home"] == 0
        assert s["published"] == s["delivered"] == 3 * readings
        for b, state in s["board_states"].items():
            assert state == s["state"], b
        # Home and site B hold every reading (sealed); site B's only peer is home.
        for d in ("proxy-home", "proxy-b"):
            db = sqlite3.connect(os.path.join(s["work"], d, "proxy.sqlite3"))
            n = db.execute("SELECT COUNT(*) FROM messages WHERE topic=?", (s["topic"],)).fetchone()[0]
            db.close()
            assert n >= 3 * readings, d
        assert s["convergence_s"] is not None and s["elapsed_s"] < 120
    finally:
        for pid in s["pids"]:
            assert not _alive(pid), "process group %d left running" % pid
