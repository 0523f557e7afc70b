"""Secure (Noise XX) links between nodes and the proxy: round trips, the
node id binding, pinned and remembered proxy keys, hostile handshakes and
the plaintext switch."""
import asyncio
import hashlib
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W
from shared_protocol.crypto import api
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.udp import HS1_PAD
from shared_protocol.session.secure_client import PROLOGUE, node_id_for
from proxy_rig import ENV
from upsycle.client import Client, ProxyKeyMismatch, SessionRefused
from upsycle.identity import known_proxy_key
from upsycle.proxy.config import Config
from upsycle.proxy.server import Proxy
from upsycle.proxy.status import fetch_status

# The stated bound for test_handshake_storm: while thousands of handshake
# messages hit the proxy, a publish -> delivery round trip on an established
# session stays under 1 s. Measured on a 2-core box: 0.15-0.17 s worst of 60
# round trips (event-loop lag <= 70 ms) when otherwise idle, up to ~0.7 s
# with the rest of the suite running beside it (load average ~8). A proxy
# that ran handshakes in pure Python on its loop (28 ms each) would stall
# for seconds.
STORM_LATENCY_MAX_S = 1.0
# A machine busy with other work stretches every round trip (up to ~1.2 s
# seen with 5 other test processes on 2 cores), so wall time alone cannot
# tell a slow machine from a proxy that pays too much per handshake. The CPU
# time this process spends per handshake message of the storm can: libsodium
# handshakes cost well under 1 ms each; pure-Python ones cost 28 ms.
STORM_CPU_PER_MESSAGE_MAX_S = 0.005
# The wall-time bound on a loaded machine: a stall is still seconds.
STORM_LATENCY_LOADED_MAX_S = 3.0


# Message 1s that never finish, over TCP and UDP, until stdin says stop:
# each costs the proxy a DH and a reply and holds a handshake slot.
STORM = """
import os, socket, sys, threading
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.udp import HS1_PAD
from shared_protocol.session.secure_client import PROLOGUE
from upsycle.crypto_nacl import install
install()
port = int(sys.argv[1])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
socks, sent = [], 0
while not stop.is_set():
    m1 = Handshake(True, os.urandom(32), os.urandom(32), PROLOGUE).write_message(b"")
    m1p = Handshake(True, os.urandom(32), os.urandom(32), PROLOGUE).write_message(bytes(HS1_PAD))
    try:
        s = socket.create_connection(("127.0.0.1", port), 2)
        s.sendall(len(m1).to_bytes(2, "big") + m1)
        socks.append(s)
    except OSError:
        pass
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"\\x01" + m1p, ("127.0.0.1", port))
    socks.append(u)
    sent += 2
    if len(socks) > 200:
        for s in socks[:100]:
            s.close()
        del socks[:100]
print(sent)
"""


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


def key(name):
    return hashlib.sha256(b"secure-test:" + name).digest()


def config(tmp_path, **limits):
    c = Config()
    c.data = str(tmp_path / "data")
    c.tcp_port = 0
    c.udp_port = 0
    c.limits.update(limits)
    return c   # allow_plaintext stays False: the default


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def started(cfg):
    p = Proxy(cfg)
    await p.start()
    return p


def client(p, name, kind="tcp", **kw):
    host, port = p.addresses[kind]
    kw.setdefault("identity", key(name))
    return Client(host, port, transport=kind, **kw)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_secure_round_trip_and_trust_on_first_use(tmp_path, kind):
    async def main():
        p = await started(config(tmp_path))
        try:
            async with client(p, b"pub", kind) as pub, client(p, b"sub", kind) as sub:
                assert pub.node_id == node_id_for(api.x25519_public(key(b"pub")))
                await sub.subscribe("room")
                for i in range(20):
                    await pub.publish("room", b"r%d" % i)
                got = [(await sub.next_delivery(timeout=5)).payload for _ in range(20)]
                assert got == [b"r%d" % i for i in range(20)]
                assert pub.link.secured and sub.link.proxy_static == p.public_key
                # the proxy knows the node by the id its key proves
                assert p.sessions[pub.node_id].bound == pub.node_id
            host, port = p.addresses[kind]
            assert known_proxy_key(None, host, port) == p.public_key
            st = p.status()
            assert st["proxy_key"] == p.public_key.hex() and st["plaintext"] == "refused"
            assert st["secure_handshakes"] >= 2 and st["handshakes_in_progress"] == 0
        finally:
            await p.stop()
        path = os.path.join(str(tmp_path / "data"), "proxy_key")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        # the identity survives a restart
        p2 = await started(config(tmp_path))
        try:
            assert p2.public_key == p.public_key
            st = await fetch_status(*p2.addresses["tcp"])   # status: plaintext from loopback
            assert st["proxy_key"] == p.public_key.hex()
        finally:
            await p2.stop()
    run(main())


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_claiming_another_nodes_id_is_refused(tmp_path, kind):
    async def main():
        p = await started(config(tmp_path))
        try:
            async with client(p, b"victim", kind) as victim:
                await victim.subscribe("mail")
                thief = client(p, b"thief", kind, node_id=victim.node_id, reconnect=False)
                with pytest.raises(SessionRefused) as e:
                    await thief.connect(timeout=10)
                assert e.value.code == W.R_NODE_ID
                # the victim's session is untouched
                assert p.sessions[victim.node_id].node == victim.node_id
                async with client(p, b"other", kind) as other:
                    await other.publish("mail", b"for victim")
                assert (await victim.next_delivery(timeout=5)).payload == b"for victim"
            assert p.status()["faults"]["node_id_mismatch"] == 1
        finally:
            await p.stop()
    run(main())


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_wrong_pinned_proxy_key_fails_the_handshake(tmp_path, kind):
    async def main():
        p = await started(config(tmp_path))
        try:
            c = client(p, b"n", kind, proxy_key=b"\x07" * 32)
            with pytest.raises(ProxyKeyMismatch):
                await c.connect(timeout=10)
            assert not p.sessions
            # pinned right, it works; a remembered key is enforced the same way
            async with client(p, b"n", kind, proxy_key=p.public_key):
                pass
            host, port = p.addresses[kind]
            from upsycle.identity import remember_proxy_key
            remember_proxy_key(None, host, port, b"\x08" * 32)
            with pytest.raises(ProxyKeyMismatch):
                await client(p, b"m", kind).connect(timeout=10)
        finally:
            await p.stop()
    run(main())


def _frames(sock, n=1, timeout=2.0):
    sock.settimeout(timeout)
    dec = framing.StreamDecoder()
    out = []
    while len(out) < n:
        data = sock.recv(65536)
        if not data:
            break
        out += dec.feed(data)
    return out


def test_plaintext_refused_unless_allowed(tmp_path):
    async def main():
        p = await started(config(tmp_path))
        loop = asyncio.get_running_loop()
        try:
            hello = E.REGISTRY.encode("s_hello", b"plain-node", 1000, 4)

            def raw():
                s = socket.create_connection(p.addresses["tcp"], 2)
                s.sendall(framing.frame(hello))
                f = _frames(s)
                s.close()
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.settimeout(2)
                # a node id of 16 bytes, as real nodes have: the refusal
                # must fit in the hello's size (test_proxy_udp.py)
                hello16 = E.REGISTRY.encode("s_hello", b"plain-node-16-by", 1000, 4)
                u.sendto(hello16, p.addresses["udp"])
                d = u.recv(2048)
                assert len(d) <= len(hello16)
                u.close()
                return f, d

            f, d = await loop.run_in_executor(None, raw)
            for m in (E.REGISTRY.decode(f[0]), E.REGISTRY.decode(d)):
                assert m.name == "error" and m["code"] == W.R_PLAINTEXT
            c = client(p, b"plain", secure=False, node_id=b"plain-node", reconnect=False)
            with pytest.raises(SessionRefused) as e:
                await c.connect(timeout=10)
            assert e.value.code == W.R_PLAINTEXT
            assert not p.sessions and p.status()["faults"]["plaintext_refused"] == 3
        finally:
            await p.stop()
        # allowed explicitly: plaintext and secure side by side
        cfg = config(tmp_path)
        cfg.allow_plaintext = True
        p = await started(cfg)
        try:
            async with client(p, b"x", secure=False, node_id=b"plain-node") as a, client(p, b"y") as b:
                await b.subscribe("mixed")
                await a.publish("mixed", b"from plaintext")
                assert (await b.next_delivery(timeout=5)).payload == b"from plaintext"
            assert p.status()["plaintext"] == "allowed"
        finally:
            await p.stop()
    run(main())


def _msg1(seed, udp=False):
    """A message 1; over UDP padded as nodes pad it (noise/udp.py HS1_PAD)."""
    hs = Handshake(True, key(b"i%d" % seed), key(b"e%d" % seed), PROLOGUE)
    return hs, hs.write_message(bytes(HS1_PAD) if udp else b"")


def test_garbage_and_truncated_handshakes_are_dropped_and_counted(tmp_path):
    async def main():
        p = await started(config(tmp_path))
        loop = asyncio.get_running_loop()
        try:
            async with client(p, b"p", "udp") as pub, client(p, b"s") as sub:
                await sub.subscribe("calm")

                def hostile():
                    tcp, udp = p.addresses["tcp"], p.addresses["udp"]
                    # TCP: a short non-envelope frame (not a message 1)
                    s = socket.create_connection(tcp, 2)
                    s.sendall(framing.frame(b"\x01\x02\x03"))
                    assert _frames(s) == []          # closed, no answer
                    s.close()
                    # TCP: a real message 1, then a truncated message 3
                    hs, m1 = _msg1(1)
                    s = socket.create_connection(tcp, 2)
                    s.sendall(framing.frame(m1))
                    hs.read_message(_frames(s)[0])
                    m3 = hs.write_message(b"")
                    s.sendall(framing.frame(m3[:40]))
                    assert _frames(s) == []
                    s.close()
                    # TCP: a garbled message 3
                    hs, m1 = _msg1(2)
                    s = socket.create_connection(tcp, 2)
                    s.sendall(framing.frame(m1))
                    hs.read_message(_frames(s)[0])
                    m3 = bytearray(hs.write_message(b""))
                    m3[5] ^= 1
                    s.sendall(framing.frame(bytes(m3)))
                    assert _frames(s) == []
                    s.close()
                    # UDP: truncated message 1, garbled message 3, stray data
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    u.sendto(b"\x01" + b"\x00" * 10, udp)
                    hs, m1 = _msg1(3, udp=True)
                    u.sendto(b"\x01" + m1, udp)
                    u.settimeout(2)
                    hs.read_message(u.recv(2048)[1:])
                    m3 = hs.write_message(b"")
                    u.sendto(b"\x03" + m3[:-1], udp)
                    u.sendto(b"\x04" + os.urandom(60), udp)
                    u.close()

                await loop.run_in_executor(None, hostile)
                await pub.publish("calm", b"still here")
                assert (await sub.next_delivery(timeout=5)).payload == b"still here"
                await asyncio.sleep(0.1)
                f = p.status()["faults"]
                assert f["noise_handshake_failed"] >= 4, f
                assert f["udp_short_handshake"] == 1, f
                assert f["udp_no_session"] == 1, f
                assert len(p.sessions) == 2
        finally:
            await p.stop()
    run(main())


def test_handshake_storm_is_bounded_and_does_not_stall_sessions(tmp_path):
    async def main():
        # no rate limit on new handshakes here: the point is the CPU they cost
        p = await started(config(tmp_path, max_handshakes=64, max_handshakes_per_host=16,
                                 handshake_rate=1000000, handshake_burst=1000000))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        sent = [0]
        try:
            async with client(p, b"ps") as pub, client(p, b"ss") as sub:
                await sub.subscribe("steady")

                async def round_trips(tag):
                    worst = 0.0
                    for i in range(60):
                        t0 = time.monotonic()
                        await pub.publish("steady", b"%s%d" % (tag, i))
                        d = await sub.next_delivery(timeout=5)
                        worst = max(worst, time.monotonic() - t0)
                        assert d.payload == b"%s%d" % (tag, i)
                    return worst

                calm = await round_trips(b"calm")
                cpu0 = time.process_time()
                # The attacker runs in its own process (as it would on its
                # own machine), so what we measure is the proxy's loop.
                attacker = subprocess.Popen([sys.executable, "-c", STORM, str(p.addresses["tcp"][1])],
                                            env=ENV, stdout=subprocess.PIPE, stdin=subprocess.PIPE)

                lag = [0.0]

                async def watch():
                    # the event loop's responsiveness: how late a 10 ms sleep wakes
                    while not stop.is_set():
                        t = time.monotonic()
                        await asyncio.sleep(0.01)
                        lag[0] = max(lag[0], time.monotonic() - t - 0.01)

                for _ in range(500):     # until the storm is under way
                    if p.handshake_count >= 16:
                        break
                    await asyncio.sleep(0.02)
                assert p.handshake_count >= 16, "the storm never started"
                watcher = asyncio.ensure_future(watch())
                worst = await round_trips(b"storm")
                stop.set()
                await watcher
                out, _ = await loop.run_in_executor(None, attacker.communicate, b"stop\n")
                sent[0] = int(out.split()[-1])
                cpu = time.process_time() - cpu0
                st = p.status()
                assert sent[0] > 200, sent
                assert st["handshakes_in_progress"] <= 64
                assert st["faults"].get("handshakes_per_host_evicted", 0) > 0, st["faults"]
                per = cpu / sent[0]
                print("storm: %d handshake messages, %.2f ms CPU each, worst round trip %.3f s (%.3f s before "
                      "it), loop lag %.3f s, load %.1f" % (sent[0], per * 1000, worst, calm, lag[0], os.getloadavg()[0]))
                assert per < STORM_CPU_PER_MESSAGE_MAX_S, "%.1f ms of CPU per handshake message" % (per * 1000)
                bound = STORM_LATENCY_MAX_S if os.getloadavg()[0] < 3 else STORM_LATENCY_LOADED_MAX_S
                assert worst < bound, "round trip %.3f s under the storm (%.3f s before it)" % (worst, calm)
        finally:
            await p.stop()
    run(main())


def test_new_handshakes_per_address_are_rate_limited(tmp_path):
    async def main():
        p = await started(config(tmp_path, handshake_rate=1, handshake_burst=3))
        loop = asyncio.get_running_loop()
        try:
            def burst():
                answers = 0
                for i in range(8):
                    _, m1 = _msg1(100 + i, udp=True)
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    u.settimeout(0.3)
                    u.sendto(b"\x01" + m1, p.addresses["udp"])
                    try:
                        answers += u.recv(2048)[0] == 2
                    except socket.timeout:
                        pass
                    u.close()
                return answers

            answers = await loop.run_in_executor(None, burst)
            assert answers in (3, 4), answers       # the burst, maybe one refill
            assert p.status()["faults"]["handshake_rate"] == 8 - answers
        finally:
            await p.stop()
    run(main())
