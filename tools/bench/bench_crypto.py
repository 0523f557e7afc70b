"""Crypto benchmark: libsodium (PyNaCl) vs our pure-Python backend on
CPython vs the same pure-Python code in the MicroPython 1.27 VM, with a
projection to boards.

    .venv/bin/python tools/bench/bench_crypto.py [--iterations N]
    .venv/bin/python tools/bench/run.py crypto

Each figure is the median of N runs (default 21 on CPython, 5 in the VM),
in milliseconds. The workload is tools/bench/crypto_workload.py, run
unchanged by every column. Boards are projected from the VM column with the
factors below (assumptions, not measurements: see the closing note printed
after the table).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "host"))
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))

# How much slower than this machine's WebAssembly VM we assume each board
# runs the same bytecode. MicroPython's big ints use 16-bit digits on these
# 32-bit ports as in the wasm build, so the ratio is one of interpreter speed:
# a desktop core running the wasm JIT is roughly 10-20x an ESP32 at 240 MHz on
# interpreter benchmarks; the RP2040 (125 MHz Cortex-M0+, code executing from
# QSPI flash through a 16 KB cache) is about 2.2x slower again
# (docs/micropython.md). Verify on hardware with the same workload file.
FACTOR_ESP32 = 15.0
FACTOR_RP2040 = 35.0
ROWS = [
    ("x25519", "X25519 (one DH)"),
    ("ed25519_sign", "Ed25519 sign (64 B)"),
    ("ed25519_verify", "Ed25519 verify (64 B)"),
    ("aead_encrypt_64B", "ChaCha20-Poly1305 seal, 64 B reading"),
    ("aead_decrypt_64B", "ChaCha20-Poly1305 open, 64 B reading"),
    ("noise_xx_handshake_both_sides", "Noise XX handshake (both sides)"),
    ("group_seal_64B", "group publish: sign + seal (reader)"),
    ("group_seal_64B_write_only", "group publish: sign + X25519 + seal (write-only)"),
    ("group_open_64B", "group receive: open + verify + cap check"),
]


def run_cpython(backend, n):
    from shared_protocol.crypto import api
    from shared_protocol.crypto.pure import PureBackend
    from upsycle.crypto_nacl import NaclBackend
    import crypto_workload
    import io
    import contextlib
    old = api.use_backend(NaclBackend() if backend == "nacl" else PureBackend())
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            crypto_workload.run(n)
    finally:
        api.use_backend(old)
    return json.loads(buf.getvalue().split("@@BENCH ", 1)[1])


def run_vm():
    from upsycle import vm
    wl = os.path.join(ROOT, "tools", "bench", "crypto_workload.py")
    p = subprocess.run(vm.command() + ["--file", wl], capture_output=True, text=True, cwd=ROOT, timeout=900)
    for line in p.stdout.splitlines():
        if line.startswith("@@BENCH "):
            return json.loads(line[8:])
    raise SystemExit("VM run failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=21)
    args = ap.parse_args(argv if argv is not None else [])
    cols = [("CPython+PyNaCl", run_cpython("nacl", args.iterations)),
            ("CPython pure", run_cpython("pure", args.iterations)),
            ("MicroPython VM", run_vm())]
    from table import render
    vm = cols[2][1]
    rows = [[label, cols[0][1][key], cols[1][1][key], vm[key], vm[key] * FACTOR_ESP32, vm[key] * FACTOR_RP2040]
            for key, label in ROWS]
    print(render("Crypto: median ms per operation (CPython %s; MicroPython 1.27 wasm VM; load average %.1f on %d"
                 " CPUs, figures move with it)" % (sys.version.split()[0], os.getloadavg()[0], os.cpu_count() or 1),
                 ["operation"] + [c[0] for c in cols] + ["ESP32 est. x%.0f" % FACTOR_ESP32,
                                                        "RP2040 est. x%.0f" % FACTOR_RP2040],
                 rows))
    print()
    per_pub = vm["group_seal_64B"]
    hs = vm["noise_xx_handshake_both_sides"] / 2
    for board, f in (("ESP32", FACTOR_ESP32), ("RP2040", FACTOR_RP2040)):
        pub_ms = per_pub * f
        print("%s (VM x %.0f): one signed, sealed publication ~%.0f ms; at one per minute that is %.2f%% "
              "of the CPU; a Noise handshake (one side) ~%.1f s per link session." % (
                  board, f, pub_ms, pub_ms / 600.0, hs * f / 1000.0))


if __name__ == "__main__":
    main(sys.argv[1:])
