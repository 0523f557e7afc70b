"""The node firmware's footprint per board architecture, and the virtual
board's speed.

Sizes: total bytes that `upsycle flash` copies for each profile's mpy-cross
arch, against the .py sources (the anchor; ratio in the same run). The arch
changes only the .mpy header until some code uses @micropython.native/viper.
Times (virtual board, this machine): start-up, soft reset, one raw-paste
command, board code saving a file (what the flash's write-through to the
host costs, host/upsycle/vboard/flash.mjs), a full flash, and the node's boot from reset to its "node up" line,
against the anchor of starting a bare VM process (node host/upsycle/mpvm/run.mjs).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

from table import render
from upsycle import boards, flashing, processes, vm
from upsycle.commands import board as board_cmd

RUNS = 7
# Saves per timed command (the per-save figure is the command's time / SAVES).
SAVES = 50
SAVE_LOOP = (b"import os\nfor i in range(%d):\n"
             b" with open('bench.tmp', 'wb') as f:\n  f.write(b'x' * 2048)\n"
             b" os.rename('bench.tmp', 'bench.dat')\n")


def flashed_builds():
    """(arch, files, source bytes, flashed bytes) for each distinct board arch."""
    out = []
    src = sum(os.path.getsize(l) for l, r in flashing.source_files())
    seen = set()
    with tempfile.TemporaryDirectory() as build:
        for prof in boards.all_profiles():
            arch = prof["mpy_cross_arch"] or "bytecode"
            if arch in seen:
                continue
            seen.add(arch)
            files = flashing.build(prof, build)
            sizes = [(r, os.path.getsize(l)) for l, r in files]
            out.append((arch, sizes, src, sum(n for _, n in sizes)))
    return out


def sizes():
    rows = [[arch, len(files), src, total, total / src] for arch, files, src, total in flashed_builds()]
    print(render("Firmware on the board (shared_protocol + firmware + boot/main), bytes",
                 ["arch", "files", ".py source (anchor)", "flashed", "ratio"], rows))


def _median_ms(fn, n=RUNS):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _until(ser, marker, timeout=20):
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        if time.monotonic() > deadline:
            raise RuntimeError("timeout waiting for %r, got %r" % (marker, buf[-200:]))
        buf += ser.read(4096)
    return buf


def _start(flash_dir):
    import serial
    p = subprocess.Popen(board_cmd.server_command(0, flash_dir),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = p.stdout.readline().strip()
    ser = serial.serial_for_url(url, timeout=0.005)
    ser.write(b"\r\x03\r\x01")
    _until(ser, b"raw REPL; CTRL-B to exit\r\n>")
    return p, ser, url


def _stop(p, ser):
    ser.close()
    processes.stop(p)
    p.stdout.close()


def timings():
    import serial
    cmd = vm.command() + ["--code", "pass"]
    anchor = _median_ms(lambda: subprocess.run(cmd, check=True, capture_output=True), 5)
    rows = [["bare VM process: node run.mjs --code pass (anchor)", anchor]]
    with tempfile.TemporaryDirectory() as tmp:
        flash_dir = os.path.join(tmp, "flash")
        rows.append(["virtual board start to raw REPL prompt",
                     _median_ms(lambda: _stop(*_start(flash_dir)[:2]), 3)])
        p, ser, url = _start(flash_dir)
        try:
            time.sleep(1)  # let the spare boot process load

            def soft():
                time.sleep(0.6)  # the next spare loads meanwhile, as between mpremote runs
                t0 = time.perf_counter()
                ser.write(b"\x04")
                _until(ser, b"soft reboot\r\nraw REPL; CTRL-B to exit\r\n>")
                return time.perf_counter() - t0
            rows.append(["soft reset (Ctrl-D) in the raw REPL",
                         statistics.median(soft() * 1000 for _ in range(RUNS))])

            def paste():
                ser.write(b"\x05A\x01")
                _until(ser, b"R\x01")
                ser.write(b"x = 1\x04")
                _until(ser, b"\x04>")
            rows.append(["one raw-paste command round trip", _median_ms(paste, 50)])

            def saves():
                # Board code saving a 2 KB file the littlefs way (temp, close,
                # rename) SAVES times: what the flash's write-through costs.
                ser.write(b"\x05A\x01")
                _until(ser, b"R\x01")
                ser.write(SAVE_LOOP % SAVES + b"\x04")
                _until(ser, b"\x04>")
            rows.append(["board code: save a 2 KB file (write, close, rename)",
                         _median_ms(saves, 5) / SAVES])
            ser.write(b"\x02")
            ser.close()
            prof = boards.load("virtual")
            cfg = flashing.make_config(prof, wifi=["upsycle-lab:upsycle-lab"])
            t0 = time.perf_counter()
            flashing.flash(url, prof, cfg, out=lambda line: None,
                           build_dir=os.path.join(tmp, "build"), tail=False)
            rows.append(["upsycle flash: compile + copy every file", (time.perf_counter() - t0) * 1000])
            ser = serial.serial_for_url(url, timeout=0.005)

            def boot():
                ser.write(b"\r\x03\x02")
                _until(ser, b">>> ")
                time.sleep(0.6)
                t0 = time.perf_counter()
                ser.write(b"\x04")
                _until(ser, b"node up")
                return time.perf_counter() - t0
            boots = [boot() * 1000 for _ in range(RUNS)]
            rows.append(["node boot: soft reset to its 'node up' line", statistics.median(boots)])
        finally:
            _stop(p, ser)
    for r in rows:
        r.append(r[1] / anchor)
    print(render("Virtual board (MicroPython 1.27 WebAssembly VM, this machine), median ms",
                 ["step", "ms", "x anchor"], rows))


def main():
    sizes()
    timings()


if __name__ == "__main__":
    main()
