"""A board with two federated proxies (`upsycle flash --proxy A --proxy B`):
its proxy dies for good mid-run, the board moves to the other one, and a
subscriber behind that one gets every reading (docs/federation.md)."""
import asyncio
import os
import subprocess
import sys
import time

from proxy_rig import ENV, ROOT, stop
from failover_rig import FAILOVER_TIMEOUT_S, READINGS, invites, start_pair, wait_line
from upsycle import processes
from upsycle.commands import board as board_cmd
from upsycle.field_demo import Proc, Subscriber


def test_a_board_moves_to_its_next_proxy_and_nothing_is_lost(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))
    pa, pb, a, b = start_pair(tmp_path)
    board_inv, sub_inv = invites()
    fs = str(tmp_path / "flash")
    os.makedirs(fs)
    p = None
    try:
        p = Proc(board_cmd.server_command(0, fs, name="roamer", echo=True), "roamer", None)
        p.wait_url()
        toml = tmp_path / "node.toml"
        toml.write_text("[app]\nreadings = %d\n" % READINGS)
        r = subprocess.run([sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", p.url,
                            "--config", str(toml), "--proxy", "127.0.0.1:%d" % pa, "--proxy", "127.0.0.1:%d" % pb,
                            "--invite", board_inv, "--wifi", "upsycle-lab:upsycle-lab", "--interval", "2",
                            "--no-tail"], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr

        async def main():
            sub = Subscriber(sub_inv, pb, print, str(tmp_path / "sub"))
            stop_sub = asyncio.Event()
            task = asyncio.ensure_future(sub.run(stop_sub))
            loop = asyncio.get_running_loop()
            try:
                # The board runs from power-on (a stop and a start on its flash).
                await loop.run_in_executor(None, p.stop)
                q = await loop.run_in_executor(None, lambda: Proc(
                    board_cmd.server_command(0, fs, name="roamer", echo=True), "roamer", None))
                await loop.run_in_executor(None, q.wait_url)
                await loop.run_in_executor(None, lambda: wait_line(q, "first reading acknowledged", 60))
                await asyncio.sleep(3)
                processes.kill(a)      # proxy A is gone for good
                await loop.run_in_executor(None, lambda: wait_line(q, "moving to the next proxy", FAILOVER_TIMEOUT_S))
                end = time.monotonic() + FAILOVER_TIMEOUT_S
                while time.monotonic() < end:
                    per = sub.per_author()
                    if per and list(per.values()) == [READINGS]:
                        break
                    await asyncio.sleep(0.5)
                return sub.per_author(), q
            finally:
                stop_sub.set()
                await task

        per, q = asyncio.run(main())
        p = q
        assert list(per.values()) == [READINGS], (per, q.lines[-40:])
        lines = q.lines
        assert any("proxy link to 127.0.0.1:%d" % pb in l for l in lines), lines[-40:]
        assert not [l for l in lines if "Traceback" in l or "SAFE MODE" in l], lines
        # The new proxy's backlog repeats what the replica holds: dropped as
        # duplicates by (author, seq), never reported as rejected readings.
        assert not [l for l in lines if "rejected (" in l], lines
    finally:
        if p is not None:
            p.stop()
        stop(b)
        if a.poll() is None:
            stop(a)
