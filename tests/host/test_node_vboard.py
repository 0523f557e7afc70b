"""A virtual board running the node, killed (power cut: SIGKILL of the board
process; its flash on the host is what littlefs would hold, see
host/upsycle/vboard/flash.mjs) while it saves, then rebooted: the replica loads (the
old state or the new one), holds every reading the node had reported, and
the node rejoins."""
import os
import random
import re
import subprocess
import sys
import time

from proxy_rig import ENV, ROOT, free_port, start_proxy, stop
from shared_protocol.dmc import store as dstore
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url
from upsycle.commands import board as board_cmd
from upsycle.field_demo import Proc

REJOIN_TIMEOUT_S = 30


def _wait_line(p, text, start, timeout=REJOIN_TIMEOUT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in p.lines[start:]:
            if text in line:
                return
        time.sleep(0.05)
    raise AssertionError("no %r from the board:\n%s" % (text, "\n".join(p.lines[-30:])))


def _readings(path):
    r = dstore.Store(path).load()   # raises if the file is not a whole replica
    return len(r.readings("temp"))


def _site(tmp_path):
    """A running proxy, an empty board flash, a topic invite, and where the
    board will keep that topic's replica."""
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port)
    fs = str(tmp_path / "flash")
    os.makedirs(fs)
    admin = Admin(os.urandom(32), os.urandom(32), 0, "field")
    inv = invite_url(admin.invite(os.urandom(32), read=True, write=True))
    dmc = os.path.join(fs, "data", admin.topic[:8].hex() + ".dmc")
    return port, proxy, fs, inv, dmc


def test_killed_mid_save_loads_old_or_new_and_rejoins(tmp_path):
    rng = random.Random(7)
    port, proxy, fs, inv, dmc = _site(tmp_path)
    procs = []

    def boot():
        p = Proc(board_cmd.server_command(0, fs, name="cut", echo=True), "cut", None)
        procs.append(p)
        p.wait_url()
        return p

    try:
        p = boot()
        r = subprocess.run([sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", p.url,
                            "--proxy", "127.0.0.1:%d" % port, "--invite", inv, "--wifi", "upsycle-lab:upsycle-lab",
                            "--interval", "1", "--no-tail"], env=ENV, cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        p.stop()
        seen = 0
        lines = []
        for rnd in range(3):
            p = boot()
            _wait_line(p, "proxy session open", 0)
            _wait_line(p, "status published", 0)
            time.sleep(rng.uniform(0.2, 1.5))
            p.kill()                       # the power goes, mid-save or not
            lines += p.lines
            n = _readings(dmc)             # old or new: a whole replica either way
            assert n >= seen
            # publish() returned (the file closed and renamed) before the
            # status line said so: the cut cannot take those readings back.
            said = [int(m.group(1)) for m in (re.search(r"status published (\d+)", l) for l in p.lines) if m]
            assert said and n >= max(said), (n, said)
            seen = n
            if rnd == 1:
                # A cut inside a write: torn temp files next to the good ones.
                with open(dmc, "rb") as f:
                    data = f.read()
                with open(dmc + ".tmp", "wb") as f:
                    f.write(data[:len(data) // 2])
                st = dmc[:-4] + ".st"
                with open(st + ".tmp", "wb") as f:
                    f.write(b"DMC1\x00\x00")
        p = boot()
        _wait_line(p, "proxy session open", 0)
        _wait_line(p, "status published", 0)
        lines += p.lines
        assert seen > 0
        assert not [l for l in lines if "unreadable" in l or "SAFE MODE" in l or "Traceback" in l], lines
        # A replica file that is garbage (not a cut: bit rot, a bad copy):
        # a clear message on the REPL, the file set aside, the node goes on.
        p.stop()
        with open(dmc, "wb") as f:
            f.write(b"DMC1" + os.urandom(300))
        p = boot()
        _wait_line(p, "proxy session open", 0)
        bad = [l for l in p.lines if "unreadable" in l]
        assert len(bad) == 1 and ".bad" in bad[0] and "starting it fresh" in bad[0], p.lines
        assert os.path.exists(dmc + ".bad")   # a rename is on flash at once
        assert not [l for l in p.lines if "SAFE MODE" in l or "Traceback" in l], p.lines
    finally:
        for q in procs:
            q.stop()
        stop(proxy)


def test_deep_sleep_duty_cycle_keeps_state_across_sleeps(tmp_path):
    port, proxy, fs, inv, dmc = _site(tmp_path)
    toml = tmp_path / "node.toml"
    toml.write_text("[sleep]\nawake_s = 2\nsleep_s = 1\n")
    p = Proc(board_cmd.server_command(0, fs, name="sleepy", echo=True), "sleepy", None)
    try:
        p.wait_url()
        r = subprocess.run([sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", p.url,
                            "--config", str(toml), "--proxy", "127.0.0.1:%d" % port, "--invite", inv,
                            "--wifi", "upsycle-lab:upsycle-lab", "--interval", "60"],
                           env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        end = time.monotonic() + 60
        while time.monotonic() < end and sum("woke from deep sleep" in l for l in p.lines) < 3:
            time.sleep(0.1)
        lines = list(p.lines)
        assert sum("woke from deep sleep" in l for l in lines) >= 3, lines[-30:]
        assert sum("deep sleep for 1000 ms" in l for l in lines) >= 3
        # One reading per wake, each acknowledged by the proxy before sleeping,
        # all kept on flash across the sleeps.
        assert sum("first reading acknowledged" in l for l in lines) >= 3, lines[-30:]
        assert _readings(dmc) >= 3
        assert not [l for l in lines if "SAFE MODE" in l or "Traceback" in l], lines
    finally:
        p.stop()
        stop(proxy)


def _flash(p, port, inv, toml):
    r = subprocess.run([sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", p.url,
                        "--config", str(toml), "--proxy", "127.0.0.1:%d" % port, "--invite", inv,
                        "--wifi", "upsycle-lab:upsycle-lab", "--interval", "1", "--no-tail"],
                       env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _wait_readings(path, n, p, timeout=REJOIN_TIMEOUT_S):
    end = time.monotonic() + timeout
    got = None
    while time.monotonic() < end:
        try:
            got = _readings(path)
        except Exception:
            got = None
        if got == n:
            return
        time.sleep(0.2)
    raise AssertionError("replica holds %r readings, not %d:\n%s" % (got, n, "\n".join(p.lines[-30:])))


def test_set_aside_replica_refills_from_the_proxy(tmp_path):
    """A node publishes, its replica is corrupted while it is off, it has no
    LAN peer: at the next boot it asks the proxy to start the topic over
    and ends with every reading the proxy kept. A board flashed later, with
    a fresh flash, gets the same history on its first boot."""
    import sqlite3
    from shared_protocol.groups.invite import member_from_url
    readings = 5
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port)
    admin = Admin(os.urandom(32), os.urandom(32), 0, "field")
    inv_a = invite_url(admin.invite(os.urandom(32), read=True, write=True))
    inv_b = invite_url(admin.invite(os.urandom(32), read=True, write=True))
    toml = tmp_path / "node.toml"
    toml.write_text("[app]\nreadings = %d\n" % readings)
    procs = []

    def boot(fs, name):
        p = Proc(board_cmd.server_command(0, fs, name=name, echo=True), name, None)
        procs.append(p)
        p.wait_url()
        return p

    try:
        fs_a = str(tmp_path / "a")
        dmc_a = os.path.join(fs_a, "data", admin.topic[:8].hex() + ".dmc")
        p = boot(fs_a, "a")
        _flash(p, port, inv_a, toml)
        p.stop()
        p = boot(fs_a, "a")
        _wait_line(p, "published %d acked %d" % (readings, readings), 0)
        p.stop()                             # off; while off, its replica rots
        assert _readings(dmc_a) == readings
        with open(dmc_a, "wb") as f:
            f.write(b"DMC1" + os.urandom(200))
        p = boot(fs_a, "a")
        _wait_readings(dmc_a, readings, p)
        # The replica file shows the readings as soon as the board writes
        # it; its log lines come through the board's console pipe, which
        # may lag behind on a loaded machine: wait for them.
        _wait_line(p, "the proxy starts it over", 0)
        lines = list(p.lines)
        assert [l for l in lines if "unreadable" in l and ".bad" in l], lines
        assert [l for l in lines if "asking the proxy for the topic's history again" in l], lines
        assert not [l for l in lines if "SAFE MODE" in l or "Traceback" in l or "rejected" in l], lines
        # Every reading the proxy kept (its SQLite store), and no other.
        db = sqlite3.connect(os.path.join(str(tmp_path / "proxy"), "proxy.sqlite3"))
        kept = db.execute("SELECT COUNT(*) FROM messages WHERE topic=?", (member_from_url(inv_a).topic,)).fetchone()[0]
        db.close()
        assert kept == readings
        values = sorted(r[1] for r in dstore.Store(dmc_a).load().readings("temp"))
        assert len(values) == kept
        # The proxy has nothing more: the refill ends (runtime.REFILL_IDLE_MS
        # of silence) and its marker goes, so the next boot does not redo it.
        _wait_line(p, "refill from the proxy done, %d readings in the replica" % readings, 0, timeout=45)
        assert not os.path.exists(dmc_a[:-4] + ".rf")
        assert not [l for l in p.lines if "not at the proxy any more" in l], p.lines
        # A fresh board on the same topic: a new subscriber starts at the
        # oldest message the proxy keeps, no refill needed.
        fs_b = str(tmp_path / "b")
        dmc_b = os.path.join(fs_b, "data", admin.topic[:8].hex() + ".dmc")
        q = boot(fs_b, "b")
        (tmp_path / "b.toml").write_text("[app]\nreadings = 1\n")
        _flash(q, port, inv_b, tmp_path / "b.toml")
        q.stop()
        q = boot(fs_b, "b")
        _wait_readings(dmc_b, readings + 1, q)
        assert not [l for l in q.lines if "history again" in l], q.lines
    finally:
        for x in procs:
            x.stop()
        stop(proxy)


# Modules a UDP node without a LAN must not hold once it runs: the boot-only
# ones it drops (runtime.BOOT_ONLY), the Noise handshake's, dropped once the
# link is secured (platform.HANDSHAKE_ONLY), and those it never needs.
NOT_LOADED = ("firmware.node", "firmware.config", "firmware.topic_load", "shared_protocol.groups.invite",
              "shared_protocol.groups.record",
              "shared_protocol.groups.pub", "shared_protocol.dmc.log_snapshot",
              "shared_protocol.noise.handshake", "shared_protocol.noise.known",
              "shared_protocol.noise.stream", "shared_protocol.wire.framing", "shared_protocol.dmc.sync",
              "shared_protocol.session.proxy", "shared_protocol.groups.admin", "shared_protocol.overlay.lan",
              "shared_protocol.bundle_lan")   # sync and the LAN layer, packed (mpy_bundle.BUNDLES)


def test_node_drops_boot_only_modules_and_still_reconnects(tmp_path):
    port, proxy, fs, inv, dmc = _site(tmp_path)
    p = Proc(board_cmd.server_command(0, fs, name="lean", echo=True), "lean", None)
    try:
        p.wait_url()
        r = subprocess.run([sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", p.url,
                            "--proxy", "127.0.0.1:%d" % port, "--invite", inv, "--wifi", "upsycle-lab:upsycle-lab",
                            "--interval", "1"], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        _wait_line(p, "first reading acknowledged", 0)
        # The proxy goes away and comes back: the node reconnects (a new
        # Noise handshake and session) with the boot-only modules gone.
        stop(proxy)
        _wait_line(p, "proxy link lost", 0, timeout=90)
        mark = len(p.lines)
        proxy = start_proxy(str(tmp_path / "proxy"), port)
        _wait_line(p, "proxy session open", mark, timeout=90)
        acked_before = max([0] + [int(l.split(" acked ")[1].split()[0]) for l in p.lines[:mark] if " acked " in l])
        end = time.monotonic() + 30
        acked = acked_before
        while time.monotonic() < end and acked <= acked_before:
            acked = max([acked_before] + [int(l.split(" acked ")[1].split()[0])
                                          for l in p.lines[mark:] if " acked " in l])
            time.sleep(0.1)
        assert acked > acked_before, p.lines[-30:]
        assert not [l for l in p.lines if "SAFE MODE" in l or "Traceback" in l], p.lines
        # What the running node holds (resume: the same VM, no soft reset).
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", p.url, "resume", "exec",
                            "import sys\nprint(' '.join(sorted(sys.modules)))"],
                           env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        loaded = set(r.stdout.split())
        # noise.udp is packed into the link's bundle on a board (mpy_bundle.BUNDLES)
        assert "firmware.runtime" in loaded and "shared_protocol.bundle_link" in loaded, r.stdout
        assert not [m for m in NOT_LOADED if m in loaded], sorted(loaded)
    finally:
        p.stop()
        stop(proxy)
