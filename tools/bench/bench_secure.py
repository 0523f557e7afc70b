"""Benchmark: secure (Noise XX) against plaintext sessions through the proxy.

    PYTHONPATH=host:. /tmp/v/bin/python tools/bench/bench_secure.py [--messages N] [--rounds R]

Same workload as bench_proxy.py (64-byte payloads, durable acks, the host
client's window; 1 -> 1 and 10 -> 10 publisher/subscriber pairs), over TCP
and over UDP. Each round starts one proxy per system with a fresh data dir
(`--insecure` for the plaintext anchor, the default secure mode otherwise),
alternating the two so a noisy neighbour hits both; the table shows the
median round and the ratio secure / plaintext in the same run. The proxy
and the host client use libsodium (crypto_nacl) for the Noise crypto.

Also: the cost of one handshake on the proxy side (responder: read message
1, write message 2, read message 3), libsodium and pure Python, as the
proxy's share of a node's connect.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_proxy as B  # noqa: E402

from shared_protocol.crypto import api  # noqa: E402
from shared_protocol.noise.handshake import Handshake  # noqa: E402
from shared_protocol.session.secure_client import PROLOGUE  # noqa: E402


def handshake_ms(n):
    """Median responder-side time of one XX handshake, in ms."""
    times = []
    for _ in range(n):
        i = Handshake(True, os.urandom(32), os.urandom(32), PROLOGUE)
        r = Handshake(False, os.urandom(32), os.urandom(32), PROLOGUE)
        m1 = i.write_message(b"")
        t0 = time.perf_counter()
        r.read_message(m1)
        m2 = r.write_message(b"")
        t1 = time.perf_counter()
        i.read_message(m2)
        m3 = i.write_message(b"")
        t2 = time.perf_counter()
        r.read_message(m3)
        r.split()
        t3 = time.perf_counter()
        times.append((t1 - t0 + t3 - t2) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000, help="messages per scenario (split over publishers)")
    ap.add_argument("--window", type=int, default=B.HOST_WINDOW_DEFAULT)
    ap.add_argument("--rounds", type=int, default=3, help="runs per system and scenario (median shown)")
    args = ap.parse_args()
    from upsycle.crypto_nacl import install
    pure = handshake_ms(5)
    install()
    nacl = handshake_ms(200)
    rows = []
    for transport in ("tcp", "udp"):
        for pairs in (1, 10):
            per_pub = args.messages // pairs
            plain, sec = [], []
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
                    plain.append(B.run_upsycle(t1, pairs, per_pub, args.window, False, transport, "plaintext"))
                    sec.append(B.run_upsycle(t2, pairs, per_pub, args.window, True, transport, "secure"))
            rows.append(("%s %d->%d" % (transport, pairs, pairs), B.median_round(plain), B.median_round(sec)))
    print("\n%-12s | %-10s | %9s | %8s | %8s" % ("scenario", "session", "msg/s", "p50 ms", "p99 ms"))
    print("-" * 60)
    for name, p, s in rows:
        for r in (p, s):
            print("%-12s | %-10s | %9.0f | %8.2f | %8.2f" % (name, r["name"], r["rate"], r["p50"], r["p99"]))
        print("%-12s | %-10s | %8.2fx | %7.2fx | %7.2fx   (secure / plaintext)" % (
            name, "ratio", s["rate"] / p["rate"], s["p50"] / p["p50"], s["p99"] / p["p99"]))
    print("\nproxy side of one XX handshake: %.3f ms with libsodium, %.1f ms pure Python (ratio %.0fx)" % (
        nacl, pure, pure / nacl))
    print("%d messages per scenario, %d-byte payloads, window %d, median of %d rounds, loopback." % (
        args.messages, B.PAYLOAD, args.window, args.rounds))


if __name__ == "__main__":
    main()
