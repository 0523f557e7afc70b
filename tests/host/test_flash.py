"""`upsycle flash` through the real mpremote onto a virtual board, and the
board's behaviour with good and bad configs."""
import json
import os
import subprocess
import sys

import pytest

from upsycle import boards, flashing
from vboard_rig import ROOT, read_until

SEED = "5a" * 32


def upsycle(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "host"), ROOT]))
    return subprocess.run([sys.executable, "-m", "upsycle"] + list(args), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def _node_toml(tmp_path, **extra):
    p = tmp_path / "node.toml"
    lines = ['node_key = "%s"' % SEED, 'proxies = ["127.0.0.1:7400"]',
             'topics = ["upsy://invite/test"]', "publish_interval_s = 15",
             '[[wifi]]', 'ssid = "upsycle-lab"', 'password = "upsycle-lab"']
    p.write_text("\n".join(lines) + "\n")
    return p


def _flash(vboard, tmp_path, *extra):
    return upsycle("flash", "--board", "virtual", "--port", vboard.url,
                   "--config", str(_node_toml(tmp_path)), "--build-dir", str(tmp_path / "build"), *extra)


def test_flash_copies_firmware_and_config_and_boots_the_node(vboard, tmp_path):
    r = _flash(vboard, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    _, public = flashing.node_keys(SEED)
    assert "node up: id %s" % public[:16] in r.stdout, r.stdout
    assert "MicroPython 1.27.0 on webassembly" in r.stdout
    # The VM's heap grows on demand: plenty free, and no frozen modules.
    assert "upsycle modules loaded from /lib (.mpy)" in r.stdout and "warning" not in r.stdout, r.stdout
    # Read everything back with mpremote itself.
    top = vboard.mpremote("fs", "ls", ":").stdout
    for name in ("boot.py", "main.py", "config.json", "lib/"):
        assert name in top, top
    libfw = vboard.mpremote("fs", "ls", ":lib/firmware").stdout
    assert "config.mpy" in libfw and "node.mpy" in libfw, libfw
    cfg = json.loads(vboard.mpremote("fs", "cat", ":config.json").stdout)
    assert cfg["node_id"] == public and cfg["node_key"] == SEED and cfg["board"] == "virtual"
    assert cfg["wifi"] == [{"ssid": "upsycle-lab", "password": "upsycle-lab"}]
    assert cfg["topics"] == ["upsy://invite/test"] and cfg["publish_interval_s"] == 15
    # The host copy of the flash holds exactly the compiled files.
    flash = tmp_path / "flash"
    for local, remote in flashing.build(boards.load("virtual"), str(tmp_path / "build")):
        with open(local, "rb") as f:
            assert (flash / remote).read_bytes() == f.read(), remote
    # The compiled firmware runs on the board.
    out = vboard.mpremote("exec", "from firmware import config\nprint(config.load('webassembly')['node_id'][:8])").stdout
    assert public[:8] in out


def test_reflash_skips_unchanged_files_and_keeps_a_given_key(vboard, tmp_path):
    assert _flash(vboard, tmp_path, "--no-tail").returncode == 0
    r = _flash(vboard, tmp_path, "--no-tail")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("unchanged") == len(flashing.build(boards.load("virtual"), str(tmp_path / "build"))), r.stdout
    # Our package is on the board now (from /lib), still not frozen.
    assert "upsycle modules loaded from /lib (.mpy)" in r.stdout, r.stdout


def test_reflash_removes_modules_the_build_no_longer_writes(vboard, tmp_path):
    """A board flashed by an earlier build (modules since packed into
    bundles) keeps no module this build does not write; the user's own
    files outside our folders stay."""
    assert _flash(vboard, tmp_path, "--no-tail").returncode == 0
    flash = tmp_path / "flash"
    stale = flash / "lib" / "shared_protocol" / "crypto" / "api.mpy"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"M\x06")
    mine = flash / "lib" / "mysensor.py"
    mine.write_text("X = 1\n")
    r = _flash(vboard, tmp_path, "--no-tail")
    assert r.returncode == 0, r.stderr
    assert "removed /lib/shared_protocol/crypto/api.mpy" in r.stdout, r.stdout
    assert not stale.exists() and mine.exists()
    for local, remote in flashing.build(boards.load("virtual"), str(tmp_path / "build")):
        assert (flash / remote).exists(), remote


def test_a_new_key_is_generated_when_none_is_given(vboard, tmp_path):
    r = upsycle("flash", "--board", "virtual", "--port", vboard.url, "--wifi", "upsycle-lab:upsycle-lab",
                "--invite", "upsy://x", "--build-dir", str(tmp_path / "build"), "--no-tail")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "flash" / "config.json").read_text())
    assert cfg["node_key"] != SEED and flashing.node_keys(cfg["node_key"])[1] == cfg["node_id"]


def _soft_reset_output(vboard):
    with vboard.serial() as ser:
        ser.write(b"\r\x03\x02")
        read_until(ser, b">>> ")
        ser.write(b"\x04")
        return read_until(ser, b">>> ").decode()


@pytest.mark.parametrize("content, expect", [
    (None, "config.missing"),
    (b"{\"format\": 1, \"board\": \"virt", "config.corrupt"),
    (b"\x00\xff" * 40, "config.corrupt"),
    (json.dumps({"format": 1, "board": "toaster"}).encode(), "config.unknown_board"),
    (json.dumps({"format": 1, "board": "pico_w"}).encode(), "config.wrong_board"),
])
def test_bad_config_gives_safe_mode_and_a_reachable_repl(vboard, tmp_path, content, expect):
    assert _flash(vboard, tmp_path, "--no-tail").returncode == 0
    if content is None:
        vboard.mpremote("fs", "rm", ":config.json")
    else:
        bad = tmp_path / "bad.json"
        bad.write_bytes(content)
        vboard.mpremote("fs", "cp", str(bad), ":config.json")
    out = _soft_reset_output(vboard)
    assert "SAFE MODE" in out and expect in out, out
    assert out.count("MPY: soft reboot") == 1, out  # no boot loop
    assert "still here" in vboard.mpremote("exec", "print('still here')").stdout


def test_main_survives_a_missing_firmware_package(vboard, tmp_path):
    assert _flash(vboard, tmp_path, "--no-tail").returncode == 0
    vboard.mpremote("fs", "rm", ":lib/firmware/node.mpy")
    out = _soft_reset_output(vboard)
    assert "SAFE MODE: the firmware failed to start" in out and "ImportError" in out, out
    assert "ok" in vboard.mpremote("exec", "print('ok')").stdout


def test_flash_messages_for_wrong_board_no_board_and_unknown_board(vboard, tmp_path):
    r = upsycle("flash", "--board", "pico_w", "--port", vboard.url, "--wifi", "a:abcdefgh")
    assert r.returncode == 1 and "reports platform 'webassembly'" in r.stderr and "--board pico_w" in r.stderr, r.stderr
    r = upsycle("flash", "--board", "toaster", "--port", vboard.url)
    assert r.returncode == 1 and "unknown board 'toaster'" in r.stderr and "pico_w" in r.stderr, r.stderr
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    free = s.getsockname()[1]
    s.close()
    r = upsycle("flash", "--board", "virtual", "--port", "socket://127.0.0.1:%d" % free, "--wifi", "a:abcdefgh")
    assert r.returncode == 1 and "no board found at socket://127.0.0.1:%d" % free in r.stderr, r.stderr


def test_version_mismatch_is_refused_with_the_pinned_version():
    class OldBoard:
        def identify(self):
            return (1, 24, 1), "rp2", "Raspberry Pi Pico W with RP2040"
    with pytest.raises(flashing.FlashError) as e:
        flashing.check_board(OldBoard(), boards.load("pico_w"))
    assert "MicroPython 1.24.1" in str(e.value) and "needs 1.27" in str(e.value)


def test_heap_advice_for_plain_esp32_pico_w_and_frozen_firmware():
    # Free heap as boards report it at the REPL: a plain ESP32 ~100-110 KB,
    # a Pico W ~190 KB. The node's figures (flashing.NODE_HEAP_*) are the
    # smallest heaps it ran in on a hard-heap MicroPython (docs/node.md).
    mpy, frozen = flashing.NODE_HEAP_MPY, flashing.NODE_HEAP_FROZEN
    assert frozen < mpy
    esp32 = flashing.heap_advice(105 * 1024, frozen=False)
    assert esp32 and "105 KB" in esp32 and "MemoryError" in esp32
    assert flashing.heap_advice(mpy, frozen=False) is None
    assert flashing.heap_advice(frozen, frozen=True) is None
    between = flashing.heap_advice((mpy + frozen) // 2, frozen=False)
    assert between and "frozen into the firmware" in between and "manifest.py" in between
    below = flashing.heap_advice(frozen - 1024, frozen=False)
    assert below and "even with them frozen" in below
    small = flashing.heap_advice(30 * 1024, frozen=True)
    assert small and "30 KB" in small and "manifest" not in small


def test_flash_says_which_boards_fit_with_mpy_and_which_need_a_frozen_image():
    want = {}
    for name in boards.names():
        heap = boards.load(name)["heap_bytes"]
        want[name] = ("mpy" if heap >= flashing.NODE_HEAP_MPY else
                      "frozen" if heap >= flashing.NODE_HEAP_FROZEN else "no")
        assert flashing.board_fit(boards.load(name)) == want[name], name
    # as measured: a Pico W and a Pico 2 W run the node from stock firmware;
    # a plain ESP32 and the ESP32-S3/C3 without PSRAM need a frozen image
    assert want["pico2_w"] == "mpy" and want["pico_w"] == "mpy" and want["virtual"] == "mpy"
    for name in ("esp32", "esp32s3", "esp32c3"):
        assert want[name] == "frozen", name
    line = flashing.fit_line(boards.load("esp32s3"))
    assert "esp32s3" in line and "%d KB" % (flashing.NODE_HEAP_FROZEN // 1024) in line
    assert "stock firmware fits" in flashing.fit_line(boards.load("pico2_w"))
    assert "stock firmware fits" in flashing.fit_line(boards.load("pico_w"))


def test_a_node_without_the_lan_needs_less_and_flash_says_so():
    # measured on a hard-heap MicroPython (docs/node.md, "Which boards fit"):
    # a config without [lan] never imports the LAN layer
    no_lan, lan = flashing.NODE_HEAP_MPY_NO_LAN, flashing.NODE_HEAP_MPY
    assert flashing.NODE_HEAP_FROZEN < no_lan < lan
    between = {"name": "b", "heap_bytes": (no_lan + lan) // 2}
    assert flashing.board_fit(between, lan=True) == "frozen"
    assert flashing.board_fit(between, lan=False) == "mpy"
    line = flashing.fit_line(between)
    assert "without the [lan] section stock firmware fits (%d KB)" % (no_lan // 1024) in line, line
    assert "stock firmware fits" in flashing.fit_line(between, lan=False)
    assert flashing.heap_advice((no_lan + lan) // 2, frozen=False, lan=False) is None
    assert "MemoryError" in flashing.heap_advice((no_lan + lan) // 2, frozen=False, lan=True)
    # the boards as measured: a Pico W runs a node from stock firmware with
    # the LAN or without it, an ESP32-S3 without PSRAM without it only; a
    # plain ESP32 and an ESP32-C3 need a frozen image either way
    pico_w = boards.load("pico_w")
    assert flashing.board_fit(pico_w, lan=False) == "mpy"
    assert flashing.board_fit(pico_w, lan=True) == "mpy"
    assert flashing.board_fit(boards.load("esp32s3"), lan=False) == "mpy"
    assert flashing.board_fit(boards.load("esp32s3"), lan=True) == "frozen"
    for name in ("esp32", "esp32c3"):
        assert flashing.board_fit(boards.load(name), lan=False) == "frozen", name


def test_bad_lan_or_sleep_sections_are_refused_before_touching_the_board(tmp_path):
    # socket://127.0.0.1:1 has no board: reaching it would be another error
    for section, want in (('[lan]\nport = 0\n', "'lan' must be"),
                          ('[lan]\nport = 47000\npeers = ["nohost"]\n', "LAN peer"),
                          ('[sleep]\nawake_s = 20\n', "'sleep' must be")):
        toml = tmp_path / "node.toml"
        toml.write_text(section)
        r = upsycle("flash", "--board", "virtual", "--port", "socket://127.0.0.1:1", "--config", str(toml))
        assert r.returncode == 1 and want in r.stderr and "connecting" not in r.stdout, (section, r.stdout, r.stderr)


def test_bad_flag_values_are_refused_before_touching_the_board(tmp_path):
    r = upsycle("flash", "--board", "virtual", "--port", "socket://127.0.0.1:1", "--wifi", "lab:short")
    assert r.returncode == 1 and "8..63" in r.stderr, r.stderr
    r = upsycle("flash", "--board", "virtual", "--port", "socket://127.0.0.1:1", "--proxy", "nohost")
    assert r.returncode == 1 and "host:port" in r.stderr, r.stderr


def test_transport_must_be_a_radio_the_board_has(tmp_path):
    toml = tmp_path / "node.toml"
    toml.write_text('transport = "ble"\nproxies = ["ble"]\n')
    r = upsycle("flash", "--board", "unix", "--port", "socket://127.0.0.1:1", "--config", str(toml))
    assert r.returncode == 1 and "has no ble radio" in r.stderr, r.stderr
    cfg = flashing.make_config(boards.load("pico_w"), {"transport": "ble", "proxies": ["ble"]})
    assert cfg["transport"] == "ble" and cfg["proxies"] == ["ble"]
    toml.write_text('transport = "radio"\n')
    r = upsycle("flash", "--board", "virtual", "--port", "socket://127.0.0.1:1", "--config", str(toml))
    assert r.returncode == 1 and "'transport' must be one of" in r.stderr, r.stderr


def test_replica_section_reaches_the_board_and_a_bad_one_is_refused_before_flashing(tmp_path):
    toml = tmp_path / "node.toml"
    cfg = flashing.make_config(boards.load("pico_w"), {"replica": {"log_keep": 32}})
    assert cfg["replica"] == {"log_keep": 32}
    toml.write_text('[replica]\nlog_keep = 0\n')
    r = upsycle("flash", "--board", "virtual", "--port", "socket://127.0.0.1:1", "--config", str(toml))
    assert r.returncode == 1 and "'replica' must be" in r.stderr, r.stderr
