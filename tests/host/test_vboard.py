"""The virtual board, driven by the real mpremote over socket://.

Each test starts its own virtual board (a Node server and one child per
boot) and stops it, whatever happens.
"""
import json
import os
import socket
import threading
import time

from vboard_rig import VirtualBoard, read_until


def _files(vboard, path=""):
    return vboard.mpremote("fs", "ls", ":" + path).stdout


def test_exec_and_friendly_errors(vboard):
    r = vboard.mpremote("exec", "print('hello', 6 * 7)")
    assert "hello 42" in r.stdout
    r = vboard.mpremote("exec", "import os\nos.stat('/nope')", check=False)
    assert r.returncode != 0 and "[Errno 2] ENOENT" in r.stdout + r.stderr, r


def test_fs_commands_round_trip_and_mirror_to_the_host(vboard, tmp_path):
    data = os.urandom(5000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(data)
    vboard.mpremote("fs", "mkdir", ":lib", "+", "fs", "cp", str(blob), ":lib/blob.bin")
    listing = _files(vboard, "lib")
    assert "5000 blob.bin" in listing, listing
    # The board's flash is mirrored to the --fs directory on the host.
    assert (tmp_path / "flash" / "lib" / "blob.bin").read_bytes() == data
    back = tmp_path / "back.bin"
    vboard.mpremote("fs", "cp", ":lib/blob.bin", str(back))
    assert back.read_bytes() == data
    # Errors come back with MicroPython's errno numbers, which mpremote names.
    r = vboard.mpremote("fs", "cat", ":nope.txt", check=False)
    assert r.returncode != 0 and "No such file or directory" in r.stdout + r.stderr, r
    r = vboard.mpremote("fs", "mkdir", ":lib", check=False)
    assert r.returncode != 0 and "File exists" in r.stdout + r.stderr, r
    vboard.mpremote("fs", "rm", ":lib/blob.bin")
    assert "blob.bin" not in _files(vboard, "lib")
    assert not (tmp_path / "flash" / "lib" / "blob.bin").exists()
    # The VM's own directories are not part of the board's flash.
    top = _files(vboard)
    assert "dev/" not in top and "proc/" not in top and "vboard/" not in top, top


def test_files_survive_a_restart_of_the_virtual_board(tmp_path):
    with VirtualBoard(tmp_path / "flash") as b:
        b.mpremote("exec", "with open('kept.txt', 'w') as f: f.write('still here')")
    with VirtualBoard(tmp_path / "flash") as b:
        assert "still here" in b.mpremote("fs", "cat", ":kept.txt").stdout


def test_soft_reset_gives_a_fresh_vm_with_the_same_files(vboard):
    vboard.mpremote("exec", "x_marker = 1\nopen('f.txt','w').write('1')")
    r = vboard.mpremote("resume", "exec", "print('x_marker' in globals())")
    assert "True" in r.stdout
    r = vboard.mpremote("soft-reset", "exec", "print('x_marker' in globals(), open('f.txt').read())")
    assert "False 1" in r.stdout, r.stdout


def test_boot_and_main_run_at_reset_in_order(vboard, tmp_path):
    (tmp_path / "boot.py").write_text("print('BOOT-RAN')\n")
    (tmp_path / "main.py").write_text("print('MAIN-RAN')\n")
    vboard.mpremote("fs", "cp", str(tmp_path / "boot.py"), ":boot.py", "+",
                    "fs", "cp", str(tmp_path / "main.py"), ":main.py")
    with vboard.serial() as ser:
        ser.write(b"\r\x03\x02")  # to the friendly REPL
        read_until(ser, b">>> ")
        ser.write(b"\x04")  # Ctrl-D: soft reset
        out = read_until(ser, b">>> ")
    assert b"MPY: soft reboot" in out, out
    i, j = out.find(b"BOOT-RAN"), out.find(b"MAIN-RAN")
    assert 0 <= i < j, out


def test_raw_paste_mode_is_supported(vboard):
    with vboard.serial() as ser:
        ser.write(b"\r\x03\x01")
        read_until(ser, b"raw REPL; CTRL-B to exit\r\n>")
        ser.write(b"\x05A\x01")
        head = read_until(ser, b"R\x01", timeout=5)
        while len(head) < 4:
            head += ser.read(4 - len(head))
        assert head.startswith(b"R\x01") and len(head) == 4, head
        assert int.from_bytes(head[2:4], "little") > 0
        ser.write(b"print(40 + 2)\x04")
        out = read_until(ser, b"\x04>", timeout=5)
        assert out.startswith(b"\x04") and b"42\r\n\x04\x04>" in out, out
        # A second command in raw-paste mode right after the first.
        ser.write(b"\x05A\x01")
        head = read_until(ser, b"R\x01", timeout=5)
        while len(head) < 4:
            head += ser.read(4 - len(head))
        assert head.startswith(b"R\x01"), head
        ser.write(b"print(6 * 7)\x04")
        out = read_until(ser, b"\x04>", timeout=5)
    assert b"42\r\n\x04\x04>" in out, out


def test_ctrl_c_stops_an_asyncio_app_so_mpremote_can_take_over(vboard, tmp_path):
    (tmp_path / "main.py").write_text(
        "import asyncio\n"
        "async def app():\n"
        "    n = 0\n"
        "    while True:\n"
        "        n += 1\n"
        "        with open('count.txt', 'w') as f:\n"
        "            f.write(str(n))\n"
        "        await asyncio.sleep_ms(50)\n"
        "asyncio.run(app())\n")
    vboard.mpremote("fs", "cp", str(tmp_path / "main.py"), ":main.py", "+", "reset")
    count = tmp_path / "flash" / "count.txt"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (count.exists() and int(count.read_text() or 0) > 3):
        time.sleep(0.1)
    assert count.exists() and int(count.read_text()) > 3
    r = vboard.mpremote("exec", "print('took over')")
    assert "took over" in r.stdout


def test_a_blocked_vm_is_restarted_without_main(vboard, tmp_path):
    (tmp_path / "main.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    vboard.mpremote("fs", "cp", str(tmp_path / "main.py"), ":main.py", "+", "reset")
    time.sleep(0.5)
    r = vboard.mpremote("exec", "print('alive again')")
    assert "alive again" in r.stdout


def test_mpremote_run_follows_an_asyncio_app_to_its_end(vboard, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        "import asyncio\n"
        "async def app():\n"
        "    for i in range(3):\n"
        "        print('step', i)\n"
        "        await asyncio.sleep_ms(20)\n"
        "    raise ValueError('app ended badly')\n"
        "asyncio.run(app())\n")
    r = vboard.mpremote("run", str(app), check=False)
    assert "step 0" in r.stdout and "step 2" in r.stdout, r
    assert r.returncode != 0 and "ValueError: app ended badly" in r.stdout + r.stderr


def test_virtual_hardware_modules(vboard):
    code = (
        "import machine, network, os, socket\n"
        "w = network.WLAN(network.STA_IF)\n"
        "w.active(True)\n"
        "w.connect('upsycle-lab', 'wrong-password')\n"
        "print('bad key', w.isconnected(), w.status() == network.STAT_WRONG_PASSWORD)\n"
        "w.connect('upsycle-lab', 'upsycle-lab')\n"
        "print('joined', w.isconnected(), w.ifconfig()[0])\n"
        "raw = machine.ADC(4).read_u16()\n"
        "t = 27 - (raw * 3.3 / 65535 - 0.706) / 0.001721\n"
        "print('temp ok', 10 < t < 35)\n"
        "print('uid', machine.unique_id().hex())\n"
        "print('rand', len(os.urandom(16)), os.urandom(8) != os.urandom(8))\n"
        "led = machine.Pin('LED', machine.Pin.OUT)\n"
        "led.on(); a = led.value(); led.toggle()\n"
        "print('led', a, led.value())\n"
        "print('cause', machine.reset_cause() == machine.PWRON_RESET)\n"
    )
    out = vboard.mpremote("exec", code).stdout
    assert "bad key False True" in out, out
    assert "joined True 127.0.0.1" in out, out
    assert "temp ok True" in out and "rand 16 True" in out and "led 1 0" in out, out
    assert "cause True" in out, out
    uid = [l for l in out.splitlines() if l.startswith("uid")][0]
    # unique_id is stable across resets (it comes from the board's name).
    again = vboard.mpremote("soft-reset", "exec", "import machine\nprint('uid', machine.unique_id().hex())").stdout
    assert uid in again


def test_machine_reset_and_watchdog_set_the_reset_cause(vboard):
    vboard.mpremote("reset")
    time.sleep(0.5)
    out = vboard.mpremote("exec", "import machine\nprint('cause', machine.reset_cause())").stdout
    assert "cause 5" in out, out  # SOFT_RESET: machine.reset() on an ESP32
    vboard.mpremote("exec", "import machine\nmachine.WDT(timeout=300)")
    time.sleep(1.5)  # nobody feeds it
    out = vboard.mpremote("exec", "import machine\nprint('cause', machine.reset_cause())").stdout
    assert "cause 3" in out, out  # WDT_RESET


def test_udp_is_bridged_to_the_host(vboard, tmp_path):
    host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host.bind(("127.0.0.1", 0))
    host.settimeout(10)
    port = host.getsockname()[1]
    got = []

    def echo():
        data, addr = host.recvfrom(1500)
        got.append(data)
        host.sendto(b"pong:" + data, addr)
    t = threading.Thread(target=echo)
    t.start()
    app = tmp_path / "udp.py"
    app.write_text(
        "import asyncio, socket, vboard\n"
        "async def app():\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.bind(('127.0.0.1', 0))\n"
        "    s.setblocking(False)\n"
        "    try:\n"
        "        s.recvfrom(100)\n"
        "    except OSError as e:\n"
        "        print('empty', e.errno)\n"
        "    s.sendto(b'ping', ('127.0.0.1', %d))\n"
        "    ok = await vboard.wait_readable(s, 5000)\n"
        "    data, addr = s.recvfrom(100)\n"
        "    print('got', ok, data, addr[1] == %d)\n"
        "    s.close()\n"
        "asyncio.run(app())\n" % (port, port))
    try:
        out = vboard.mpremote("run", str(app)).stdout
    finally:
        t.join(timeout=10)
        host.close()
    assert got == [b"ping"]
    assert "empty 11" in out, out  # EAGAIN, as on a board
    assert "got True b'pong:ping' True" in out, out


def test_modules_boards_lack_are_refused(vboard):
    r = vboard.mpremote("exec", "import logging", check=False)
    assert r.returncode != 0 and "board firmware lacks it" in r.stdout + r.stderr, r


def test_upsycle_board_virtual_command_prints_the_url_and_stops_cleanly(tmp_path):
    import subprocess
    import sys
    from vboard_rig import ROOT
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "host"), ROOT]))
    proc = subprocess.Popen([sys.executable, "-m", "upsycle", "board", "virtual", "--port", "0",
                             "--fs", str(tmp_path / "flash"), "--name", "cli"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT, start_new_session=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:"), url
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", url, "exec",
                            "with open('x.txt','w') as f: f.write('cli')"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=30)  # a loaded CI machine: the server mirrors the flash first
        finally:
            try:
                os.killpg(proc.pid, 9)  # nothing may be left; this is only the safety net
                leftover = True
            except ProcessLookupError:
                leftover = False
            proc.stdout.close()
            proc.stderr.close()
    assert code == 0
    assert (tmp_path / "flash" / "x.txt").read_text() == "cli"
    assert not leftover, "board processes outlived the server"


def test_tcp_client_connections_reach_the_host(vboard, tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    got = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            got.append(conn.recv(100))
            conn.sendall(b"hello board")
    t = threading.Thread(target=serve)
    t.start()
    app = tmp_path / "tcp.py"
    app.write_text(
        "import asyncio, socket, vboard\n"
        "async def app():\n"
        "    s = socket.socket()\n"
        "    s.connect(('127.0.0.1', %d))\n"
        "    s.send(b'hello host')\n"
        "    await vboard.wait_readable(s, 5000)\n"
        "    print('got', s.recv(100))\n"
        "    await vboard.wait_readable(s, 5000)\n"
        "    print('closed', s.recv(100) == b'')\n"
        "    s.close()\n"
        "    r = socket.socket()\n"
        "    r.connect(('127.0.0.1', 1))\n"
        "    await vboard.wait_readable(r, 5000)\n"
        "    try:\n"
        "        r.recv(10)\n"
        "    except OSError as e:\n"
        "        print('refused', e.errno)\n"
        "asyncio.run(app())\n" % port)
    try:
        out = vboard.mpremote("run", str(app)).stdout
    finally:
        t.join(timeout=10)
        srv.close()
    assert got == [b"hello host"]
    assert "got b'hello board'" in out and "closed True" in out, out
    assert "refused 111" in out, out  # ECONNREFUSED, MicroPython's number


def test_two_virtual_boards_talk_udp_on_loopback(tmp_path):
    import subprocess
    import sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    listener = tmp_path / "listen.py"
    listener.write_text(
        "import asyncio, socket, vboard\n"
        "async def app():\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.bind(('127.0.0.1', %d))\n"
        "    print('listening')\n"
        "    ok = await vboard.wait_readable(s, 15000)\n"
        "    data, addr = s.recvfrom(100)\n"
        "    print('A got', data)\n"
        "    s.sendto(b'ack:' + data, addr)\n"
        "asyncio.run(app())\n" % port)
    sender = tmp_path / "send.py"
    sender.write_text(
        "import asyncio, socket, vboard\n"
        "async def app():\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.bind(('127.0.0.1', 0))\n"
        "    s.sendto(b'from B', ('127.0.0.1', %d))\n"
        "    await vboard.wait_readable(s, 10000)\n"
        "    print('B got', s.recvfrom(100)[0])\n"
        "asyncio.run(app())\n" % port)
    with VirtualBoard(tmp_path / "a", name="a") as a, VirtualBoard(tmp_path / "b", name="b") as b:
        run_a = subprocess.Popen([sys.executable, "-m", "mpremote",
                                  "connect", a.url, "run", str(listener)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Wait until A listens (its output comes through mpremote).
            first = run_a.stdout.readline()
            assert "listening" in first, first + run_a.stderr.read()
            out_b = b.mpremote("run", str(sender)).stdout
            out_a, err_a = run_a.communicate(timeout=30)
        finally:
            if run_a.poll() is None:
                run_a.kill()
                run_a.communicate()
    assert "A got b'from B'" in out_a, out_a + err_a
    assert "B got b'ack:from B'" in out_b, out_b


# The app of test_a_power_cut_leaves_the_flash_as_littlefs_would: every kind
# of littlefs commit, then "CUT" and the power goes at once (no sleep).
POWER_CUT_APP = """\
import asyncio, os
async def app():
    await asyncio.sleep_ms(300)
    with open('new.tmp', 'w') as f:   # replaced the littlefs way: temp, close, rename
        f.write('reading 1\\n' * 300)
    os.rename('new.tmp', 'new.txt')
    os.remove('gone.txt')
    os.mkdir('made')
    os.rmdir('emptied')
    h = open('flushed.txt', 'w')
    h.write('flushed')
    h.flush()                          # committed ...
    h.write(' and not this')           # ... this is not
    g = open('old.txt', 'w')           # truncated and rewritten, never closed
    g.write('half of a new content')
    f = open('opened.txt', 'w')        # a new file, never closed
    f.write('x' * 1000)
    print('CUT')
    while True:
        await asyncio.sleep_ms(1000)
asyncio.run(app())
"""


def test_a_power_cut_leaves_the_flash_as_littlefs_would(tmp_path):
    """SIGKILL of the board right after close+rename keeps the new file
    (littlefs commits on close; rename is atomic), and writes to files not
    closed or flushed are not there (host/upsycle/vboard/flash.mjs)."""
    from upsycle.commands import board as board_cmd
    from upsycle.field_demo import Proc
    fs = tmp_path / "flash"
    fs.mkdir()
    (fs / "main.py").write_text(POWER_CUT_APP)
    (fs / "gone.txt").write_text("to be removed")
    (fs / "old.txt").write_text("old content")
    (fs / "emptied").mkdir()
    p = Proc(board_cmd.server_command(0, str(fs), name="cut", echo=True), "cut", None)
    try:
        p.wait_url()
        deadline = time.monotonic() + 20
        while "CUT" not in p.lines and time.monotonic() < deadline:
            time.sleep(0.005)
        assert "CUT" in p.lines, p.lines
        p.kill()   # the power goes: no chance to write anything more
    finally:
        p.stop()
    assert (fs / "new.txt").read_text() == "reading 1\n" * 300
    assert not (fs / "new.tmp").exists()
    assert not (fs / "gone.txt").exists()
    assert (fs / "made").is_dir() and not (fs / "emptied").exists()
    assert (fs / "flushed.txt").read_text() == "flushed"
    assert (fs / "old.txt").read_text() == "old content"
    # littlefs commits a new file's name at open: it is there, empty.
    assert (fs / "opened.txt").read_bytes() == b""
    assert not [f for f in os.listdir(fs) if f.startswith(".vboard-")]


def test_a_soft_reset_commits_open_files_a_hard_reset_does_not(vboard, tmp_path):
    # A soft reset runs the files' finalisers (gc_sweep_all): open files are
    # closed, so committed; machine.reset() is a chip reset: they are lost.
    vboard.mpremote("exec", "f = open('soft.txt', 'w')\nf.write('kept')")
    vboard.mpremote("soft-reset")
    assert (tmp_path / "flash" / "soft.txt").read_text() == "kept"
    vboard.mpremote("exec", "g = open('hard.txt', 'w')\ng.write('lost')")
    vboard.mpremote("resume", "reset")   # resume: no soft reset on connecting
    time.sleep(0.5)
    assert (tmp_path / "flash" / "hard.txt").read_text() == ""
