"""The proxy's UDP side towards strangers and after a crash: no answer to an
unauthenticated datagram is larger than it, handshake messages are repeated
only when the node repeats, and nodes resume at once after a restart
(noise/udp.py, proxy/admission.py)."""
import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import time

import pytest

from proxy_rig import free_port, start_proxy
from shared_protocol.wire import envelope as E
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.udp import HS1_PAD
from shared_protocol.session.secure_client import PROLOGUE
from upsycle.client import Client

# A UDP node resends an unanswered publish after 250 ms (session.py
# RTO_INITIAL_MS); "resumes within about two resend intervals" plus a
# handshake on loopback and a loaded test box: 2 s. Before, 45 s
# (three missed keepalives).
RESUME_MAX_S = 2.0


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


def ident(name):
    return hashlib.sha256(b"udp-test:" + name).digest()


def answers(sock, wait):
    """Every datagram that arrives on sock within wait seconds."""
    out = []
    end = time.monotonic() + wait
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return out
        sock.settimeout(left)
        try:
            out.append(sock.recv(4096))
        except socket.timeout:
            return out


def test_no_reply_to_an_unauthenticated_datagram_is_larger_than_it(tmp_path):
    port = free_port()
    proc = start_proxy(str(tmp_path / "d"), port, stderr=subprocess.DEVNULL)
    addr = ("127.0.0.1", port)
    cases = []
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Plaintext hellos (the proxy refuses plaintext): a real one of 26
        # bytes, and a 10-byte one no refusal fits in.
        for hello in (E.REGISTRY.encode("s_hello", b"n" * 16, 15000, 32), E.REGISTRY.encode("s_hello", b"x", 1000, 4)):
            u.sendto(hello, addr)
            got = answers(u, 2.0)    # a proxy just started on a busy machine may be slow to answer
            cases.append(("plaintext hello", len(hello), [len(g) for g in got]))
            for g in got:
                assert len(g) <= len(hello)
                assert E.REGISTRY.decode(g)["code"] == "plaintext_refused"
        assert cases[0][2], "the real hello gets a (short) refusal"
        assert cases[1][2] == [], "nothing fits under a 10-byte hello"
        # An unpadded Noise message 1 (33 bytes): no answer at all.
        m1 = Handshake(True, os.urandom(32), os.urandom(32), PROLOGUE).write_message(b"")
        u.sendto(b"\x01" + m1, addr)
        assert answers(u, 0.5) == []
        # A padded message 1, sent once and never repeated: exactly one
        # message 2 no larger than it, not one per second for 8 s.
        m1 = b"\x01" + Handshake(True, os.urandom(32), os.urandom(32), PROLOGUE).write_message(bytes(HS1_PAD))
        u.sendto(m1, addr)
        got = answers(u, 3.5)
        cases.append(("message 1 once", len(m1), [len(g) for g in got]))
        assert len(got) == 1 and got[0][0] == 2 and len(got[0]) <= len(m1), cases[-1]
        # Repeated by the initiator: answered once per repeat.
        u.sendto(m1, addr)
        got = answers(u, 0.5)
        assert len(got) == 1 and len(got[0]) <= len(m1)
        # A transport packet without a session: a "no session" answer, shorter.
        for n in (25, 60, 1200):
            d = b"\x04" + os.urandom(n - 1)
            u.sendto(d, addr)
            got = answers(u, 0.5)
            cases.append(("transport without session", n, [len(g) for g in got]))
            assert len(got) == 1 and got[0][0] == 5 and len(got[0]) < n
        u.sendto(b"\x04" + os.urandom(10), addr)     # too short to answer
        assert answers(u, 0.5) == []
        u.close()
        print("\n".join("%s: %d bytes in -> %s out" % c for c in cases))
    finally:
        proc.terminate()
        proc.wait(10)


def test_udp_node_resumes_at_once_after_a_proxy_crash(tmp_path):
    port = free_port()
    data = str(tmp_path / "d")
    proc = start_proxy(data, port, stderr=subprocess.DEVNULL)

    async def main():
        nonlocal proc
        async with Client("127.0.0.1", port, identity=ident(b"pub"), transport="udp") as pub, \
                Client("127.0.0.1", port, identity=ident(b"sub"), transport="udp") as sub:
            await sub.subscribe(b"r")
            await asyncio.wait_for(pub.publish(b"r", b"before"), 10)
            assert (await sub.next_delivery(timeout=10)).payload == b"before"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = start_proxy(data, port, stderr=subprocess.DEVNULL)
            t0 = time.monotonic()
            await asyncio.wait_for(pub.publish(b"r", b"after"), 60)
            took = time.monotonic() - t0
            d = await sub.next_delivery(timeout=30)
            took_sub = time.monotonic() - t0
            assert d.payload == b"after"
            print("after the crash: publish acknowledged in %.2f s, delivered in %.2f s" % (took, took_sub))
            assert took < RESUME_MAX_S, took
            return took

    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        proc.kill()
        proc.wait(10)


FLOOD = """
import os, socket, sys, threading, time
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.udp import HS1_PAD
from shared_protocol.session.secure_client import PROLOGUE
port = int(sys.argv[1])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
# A handful of message 1s reused (a flood need not pay for new keys), each
# from a fresh source port of the same address, over UDP and TCP.
m1s = [Handshake(True, os.urandom(32), os.urandom(32), PROLOGUE).write_message(bytes(HS1_PAD)) for _ in range(8)]
sent = 0
socks = []
while not stop.is_set():
    m1 = m1s[sent % 8]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"\\x01" + m1, ("127.0.0.1", port))
    u.close()
    if sent % 10 == 0:
        try:
            s = socket.create_connection(("127.0.0.1", port), 2)
            s.sendall(len(m1).to_bytes(2, "big") + m1)
            socks.append(s)
        except OSError:
            pass
        if len(socks) > 50:
            socks.pop(0).close()
    sent += 1
    if sent % 10 == 0:
        time.sleep(0.01)   # ~1000/s: 200 times the handshake rate, and not a flood of the socket buffer
print(sent)
"""


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_a_handshake_flood_from_its_own_address_does_not_lock_out_a_known_node(tmp_path, kind):
    from proxy_rig import ENV
    import sys
    from upsycle.proxy.config import Config
    from upsycle.proxy.server import Proxy

    async def main():
        c = Config()
        c.data = str(tmp_path / "d")
        c.tcp_port = c.udp_port = 0
        c.limits.update(handshake_rate=5, handshake_burst=5, max_handshakes_per_host=4)
        p = Proxy(c)
        await p.start()
        loop = asyncio.get_running_loop()
        flood = None
        try:
            host, port = p.addresses[kind]
            # Seen once (its key is known to the proxy from now on).
            async with Client(host, port, identity=ident(b"known"), transport=kind) as n:
                await n.publish(b"f", b"first")
            async with Client(host, port, identity=ident(b"holder"), transport=kind) as holder:
                await holder.subscribe(b"f")
                flood = subprocess.Popen([sys.executable, "-c", FLOOD, str(p.addresses["udp"][1])],
                                         env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                for _ in range(200):
                    await asyncio.sleep(0.02)
                    if p.faults.counts.get("handshake_rate", 0) > 100:
                        break
                assert p.faults.counts.get("handshake_rate", 0) > 100, "the flood never started"
                t0 = time.monotonic()
                async with Client(host, port, identity=ident(b"known"), transport=kind) as n:
                    await asyncio.wait_for(n.publish(b"f", b"during the flood"), 10)
                took = time.monotonic() - t0
                # The node holding a session re-handshakes (a second link for it).
                async with Client(host, port, identity=ident(b"holder"), transport=kind) as again:
                    await asyncio.wait_for(again.subscribe(b"f"), 10)
                out, _ = await loop.run_in_executor(None, flood.communicate, b"stop\n")
                flood = None
                f = p.faults.counts
                print("%s: %s flood messages 1, %d refused by rate; the known node got through in %.2f s "
                      "(%d hinted handshakes)" % (kind, out.decode().strip(), f.get("handshake_rate", 0), took,
                                                 p.hinted_handshakes))
                assert p.hinted_handshakes >= 2
        finally:
            if flood is not None:
                flood.kill()
                flood.wait()
            await p.stop()

    asyncio.run(asyncio.wait_for(main(), 120))


def test_a_known_node_is_still_known_after_a_restart(tmp_path):
    from upsycle.proxy.config import Config
    from upsycle.proxy.server import Proxy

    async def main():
        c = Config()
        c.data = str(tmp_path / "d")
        c.tcp_port = c.udp_port = free_port()   # the node remembers the proxy's key by HOST:PORT
        p = Proxy(c)
        await p.start()
        try:
            async with Client(*p.addresses["udp"], identity=ident(b"remembered"), transport="udp") as n:
                await n.publish(b"k", b"1")
            assert p.hinted_handshakes == 0
            await asyncio.sleep(0.5)          # its key is written with the next transaction
        finally:
            await p.stop()
        p = Proxy(c)
        await p.start()
        try:
            async with Client(*p.addresses["udp"], identity=ident(b"remembered"), transport="udp") as n:
                await n.publish(b"k", b"2")
            assert p.hinted_handshakes == 1
        finally:
            await p.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
