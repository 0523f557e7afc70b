"""A board that publishes through all its proxies (`upsycle flash --proxy A
--proxy B --proxy-mode all`): the proxy of its link dies for good mid-run,
and a subscriber behind the other one gets every reading at once, long
before the link would fail over (docs/federation.md)."""
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


def test_a_board_in_all_mode_loses_nothing_and_waits_for_no_failover(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))
    pa, pb, a, b = start_pair(tmp_path)
    board_inv, sub_inv = invites()
    fs = str(tmp_path / "flash")
    os.makedirs(fs)
    p = None
    try:
        p = Proc(board_cmd.server_command(0, fs, name="twofold", echo=True), "twofold", None)
        p.wait_url()
        toml = tmp_path / "node.toml"
        toml.write_text("[app]\nreadings = %d\n" % READINGS)
        flash = [sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", p.url,
                 "--config", str(toml), "--proxy", "127.0.0.1:%d" % pa, "--proxy", "127.0.0.1:%d" % pb,
                 "--invite", board_inv, "--wifi", "upsycle-lab:upsycle-lab", "--interval", "2", "--no-tail"]
        r = subprocess.run(flash + ["--proxy-mode", "both"], env=ENV, cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and "proxy_mode" in r.stderr, r.stderr   # refused before writing anything
        r = subprocess.run(flash + ["--proxy-mode", "all"], env=ENV, cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr

        async def main():
            sub = Subscriber(sub_inv, pb, print, str(tmp_path / "sub"))
            stop_sub = asyncio.Event()
            task = asyncio.ensure_future(sub.run(stop_sub))
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, p.stop)
                q = await loop.run_in_executor(None, lambda: Proc(
                    board_cmd.server_command(0, fs, name="twofold", echo=True), "twofold", None))
                await loop.run_in_executor(None, q.wait_url)
                await loop.run_in_executor(None, lambda: wait_line(q, "first reading acknowledged", 60))
                await asyncio.sleep(3)
                processes.kill(a)      # the link's own proxy is gone for good
                killed = time.monotonic()
                end = killed + FAILOVER_TIMEOUT_S
                while time.monotonic() < end:
                    per = sub.per_author()
                    if per and list(per.values()) == [READINGS]:
                        break
                    await asyncio.sleep(0.5)
                moved = any("moving to the next proxy" in line for line in q.lines)
                if list(sub.per_author().values()) != [READINGS]:
                    from upsycle.proxy.status import fetch_status
                    print("subscriber: delivered %d rejected %d %r" % (sub.delivered, sub.rejected, sub.reasons))
                    print("proxy B:", await fetch_status("127.0.0.1", pb))
                return sub.per_author(), q, moved, time.monotonic() - killed
            finally:
                stop_sub.set()
                await task

        per, q, moved, took = asyncio.run(main())
        p = q
        if list(per.values()) != [READINGS] or moved:
            print("\n".join(q.lines))   # the board's whole log, for the report
        assert list(per.values()) == [READINGS], (per, q.lines[-40:])
        lines = q.lines
        assert any("also publishing through 127.0.0.1:%d" % pb in l for l in lines), lines[-40:]
        # every reading reached B through the mirror before the link gave A up
        assert not moved, (took, lines[-40:])
        assert not [l for l in lines if "Traceback" in l or "SAFE MODE" in l], lines
    finally:
        if p is not None:
            p.stop()
        stop(b)
        if a.poll() is None:
            stop(a)
