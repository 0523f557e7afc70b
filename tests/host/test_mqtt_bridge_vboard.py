"""The MQTT bridge with the real node firmware: a virtual board (MicroPython
1.27 in the VM, flashed with `upsycle flash` through the real mpremote)
publishes its temperature through the real proxy; the bridge puts every
reading on a real Mosquitto with Home Assistant discovery; a set command
from MQTT travels back through the proxy into the board's replica."""
import json
import os
import subprocess
import sys
import time

from mqtt_rig import Bridge, Mosquitto, Watcher, publish
from proxy_rig import ENV, ROOT, cli, free_port, start_proxy
from shared_protocol.dmc import store as dstore
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url
from upsycle.commands import board as board_cmd
from upsycle.field_demo import Proc

READINGS = 4
# Power-on to the last reading at the broker: ~15 s on an idle machine; the
# VM is several times slower when the machine is loaded.
BOOT_S = 150


def test_virtual_board_readings_on_mqtt_and_a_set_command_back(tmp_path):
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port)
    broker = Mosquitto(tmp_path)
    admin = Admin(os.urandom(32), os.urandom(32), 0, "field")
    r = cli("topic", "join", invite_url(admin.invite(os.urandom(32), read=True, write=True)),
            "--home", str(tmp_path / "bridge"))
    assert r.returncode == 0, r.stderr
    fs = str(tmp_path / "flash")
    os.makedirs(fs)
    toml = tmp_path / "node.toml"
    toml.write_text("[app]\nreadings = %d\n" % READINGS)
    board = bridge = watcher = None
    try:
        watcher = Watcher(broker.port, ("upsycle/#", "homeassistant/#"))
        bridge = Bridge(tmp_path / "bridge", port, broker.port)
        bridge.wait_line("event=broker_connected")
        board = Proc(board_cmd.server_command(0, fs, name="b1", echo=True), "b1", None)
        board.wait_url()
        f = subprocess.run([sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", board.url,
                            "--config", str(toml), "--proxy", "127.0.0.1:%d" % port, "--invite",
                            invite_url(admin.invite(os.urandom(32), read=True, write=True)),
                            "--wifi", "upsycle-lab:upsycle-lab", "--interval", "1", "--no-tail"],
                           env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert f.returncode == 0, f.stderr
        # power-cycle: the flashed node runs from main.py
        board.stop()
        board = Proc(board_cmd.server_command(0, fs, name="b1", echo=True), "b1", None)
        board.wait_url()
        try:
            watcher.wait_for(lambda: len(watcher.readings("upsycle/field/")) >= READINGS, timeout=BOOT_S,
                             what="the board's readings")
        except AssertionError as e:
            raise AssertionError("%s\nboard:\n%s\nbridge:\n%s" % (e, "\n".join(board.lines[-30:]),
                                                                   "\n".join(bridge.lines[-20:])))
        got = watcher.readings("upsycle/field/")
        assert [t.rsplit("/", 1)[1] for t, _ in got] == ["temp"] * READINGS
        assert [j["seq"] for _, j in got] == list(range(1, READINGS + 1))
        assert all(isinstance(j["value"], (int, float)) and j["unit"] == "°C" for _, j in got)
        node = got[0][1]["author"]
        cfgs = [json.loads(p) for t, p, _ in watcher.topics("homeassistant/device/") if p]
        assert cfgs and cfgs[-1]["components"]["temp"]["device_class"] == "temperature"
        assert cfgs[-1]["device"]["identifiers"] == ["upsycle_%s_%s" % (admin.topic[:8].hex(), node)]
        # MQTT -> bridge (sealed, signed) -> proxy -> the board's replica on its flash
        publish(broker.port, "upsycle/field/set/fan", b"true")
        bridge.wait_line("event=set_written")
        path = os.path.join(fs, "data", admin.topic[:8].hex() + ".dmc")
        end = time.monotonic() + 60
        val = None
        while time.monotonic() < end:
            try:
                val = dstore.Store(path).load().get("settings", "fan")
            except Exception:
                val = None
            if val is True:
                break
            time.sleep(0.5)
        assert val is True, board.lines[-20:]
    finally:
        if watcher is not None:
            watcher.close()
        if bridge is not None:
            bridge.stop()
        if board is not None:
            board.stop()
        broker.stop()
        proxy.terminate()
        proxy.wait(10)
