"""Honest nodes beside an attacker that tries every trick at once, while the
proxy is SIGKILLed and restarted: nothing acknowledged is lost, the honest
nodes keep being served, the proxy stays within its limits."""
import asyncio
import hashlib
import os
import random
import signal
import struct
import subprocess
import sys

from proxy_rig import ENV, cli, free_port, rss_kb, start_proxy
from shared_protocol.session import messages as W
from upsycle.client import Client
from upsycle.processes import kill

# The attacker, in its own process (as on its own machine). Unauthenticated:
# garbage, short and unfinished handshakes, forged hints, transport packets
# without a session, plaintext hellos, stalled TCP connections, status
# spam. Authenticated (its own keys, as anyone may make): subscribe bursts,
# publishes to thousands of new topics, idle sessions hoarding slots.
ATTACK = r"""
import asyncio, hashlib, os, random, socket, struct, sys, threading, time
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.udp import HS1_PAD
from shared_protocol.session.secure_client import PROLOGUE
from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W
from upsycle.client import Client, PublishRejected
port = int(sys.argv[1])
addr = ("127.0.0.1", port)
stop = threading.Event()
counts = {}
def note(k, n=1):
    counts[k] = counts.get(k, 0) + n
rng = random.Random(7)

def raw():
    m1s = [Handshake(True, os.urandom(32), os.urandom(32), PROLOGUE).write_message(bytes(HS1_PAD)) for _ in range(4)]
    stalled = []
    while not stop.is_set():
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.sendto(os.urandom(rng.randrange(1, 1300)), addr); note("udp garbage")
            u.sendto(b"\x01" + os.urandom(32), addr); note("udp short message 1")
            u.sendto(b"\x01" + rng.choice(m1s), addr); note("udp unfinished handshake")
            u.sendto(b"\x01" + os.urandom(32) + os.urandom(24) + bytes(40), addr); note("udp forged hint")
            u.sendto(b"\x04" + os.urandom(rng.randrange(10, 1200)), addr); note("udp data without session")
            u.sendto(b"\x05" + os.urandom(16), addr); note("udp no-session answer to the proxy")
            u.sendto(E.REGISTRY.encode("s_hello", os.urandom(16), 1000, 4), addr); note("udp plaintext hello")
        finally:
            u.close()
        try:
            s = socket.create_connection(addr, 2)
            k = rng.randrange(4)
            if k == 0:
                s.sendall(b"\xff\xff"); note("tcp over-long frame")
            elif k == 1:
                s.sendall(b"\x0f\xa0" + bytes(10)); note("tcp stalled frame")
            elif k == 2:
                m1 = rng.choice(m1s)
                s.sendall(framing.frame(m1) + framing.frame(os.urandom(64))); note("tcp garbled message 3")
            else:
                s.sendall(framing.frame(E.REGISTRY.encode("s_status_req"))); note("tcp status request")
            stalled.append(s)
            if len(stalled) > 300:
                stalled.pop(0).close()
        except OSError:
            note("tcp refused")
        time.sleep(0.002)

async def authenticated():
    topic_n = 0
    while not stop.is_set():
        key = os.urandom(32)
        try:
            c = Client("127.0.0.1", port, identity=key, reconnect=False)
            await c.connect(timeout=5)
        except Exception:
            note("auth connect failed")
            await asyncio.sleep(0.2)
            continue
        note("auth session")
        for i in range(100):          # a subscribe burst, past what an honest client sends
            c.session._out.append(E.REGISTRY.encode("s_subscribe", os.urandom(16)))
        c._flush(); note("subscribes", 100)
        futs = []
        for i in range(64):           # publishes to new topics
            topic_n += 1
            futs.append(asyncio.ensure_future(c.publish(b"spam-%d" % topic_n, b"x" * 200)))
        note("publishes to new topics", 64)
        for f in futs:
            try:
                await asyncio.wait_for(f, 5)
            except (PublishRejected, asyncio.TimeoutError, ConnectionError):
                note("attacker publish refused")
        if rng.random() < 0.7:
            idle.append(c); note("idle session kept")   # hoard the slot
        else:
            await c.close()
        if len(idle) > 60:
            await idle.pop(0).close()
        await asyncio.sleep(0.05)

idle = []
threading.Thread(target=raw, daemon=True).start()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
loop = asyncio.new_event_loop()
loop.run_until_complete(authenticated())
for k in sorted(counts):
    print("%s=%d" % (k, counts[k]))
"""


def node_key(name):
    return hashlib.sha256(b"adversary-test:" + name).digest()


def test_honest_nodes_lose_nothing_beside_an_attacker_and_crashes(tmp_path):
    port = free_port()
    data = str(tmp_path / "d")
    rng = random.Random(99)
    kills = 3
    publishers = (("tcp", 0), ("udp", 1))

    async def main():
        state = {"proc": start_proxy(data, port, stderr=subprocess.DEVNULL)}
        acked = {i: [] for _, i in publishers}
        received = []
        stop = asyncio.Event()
        rss = []

        async def publisher(kind, i):
            c = Client("127.0.0.1", port, identity=node_key(b"pub-%d" % i), transport=kind, window=8)
            await c.connect(timeout=30)
            seq = 0
            pending = []
            while not stop.is_set():
                seq += 1
                fut = await c.publish_nowait("honest", struct.pack(">IQ", i, seq), msg_id=W.message_id(c.node_id, seq))
                pending.append((seq, fut))
                while pending and pending[0][1].done():
                    s, f = pending.pop(0)
                    f.result()
                    acked[i].append(s)
                await asyncio.sleep(0.01)
            for s, f in pending:
                await asyncio.wait_for(f, 60)
                acked[i].append(s)
            await c.close()

        async def subscriber():
            c = Client("127.0.0.1", port, identity=node_key(b"sub"))
            await c.connect(timeout=30)
            await c.subscribe("honest")
            while True:
                d = await c.next_delivery()
                assert not d.missed
                received.append(struct.unpack(">IQ", d.payload))

        attacker = None
        try:
            sub = asyncio.ensure_future(subscriber())
            await asyncio.sleep(0.5)
            attacker = subprocess.Popen([sys.executable, "-c", ATTACK, str(port)], env=ENV, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            pubs = [asyncio.ensure_future(publisher(k, i)) for k, i in publishers]
            loop = asyncio.get_running_loop()
            for k in range(kills):
                await asyncio.sleep(3 + rng.random() * 2)
                rss.append(rss_kb(state["proc"].pid))
                state["proc"].kill()                       # SIGKILL under attack and load
                await loop.run_in_executor(None, state["proc"].wait)
                state["proc"] = await loop.run_in_executor(
                    None, lambda: start_proxy(data, port, stderr=subprocess.DEVNULL))
            await asyncio.sleep(3)
            status = await loop.run_in_executor(None, lambda: cli("proxy", "status", "--proxy", "127.0.0.1:%d" % port,
                                                                 "--json"))
            out, _ = await loop.run_in_executor(None, attacker.communicate, b"stop\n")
            stop.set()
            await asyncio.wait_for(asyncio.gather(*pubs), 90)
            total = sum(len(v) for v in acked.values())
            deadline = loop.time() + 60
            while loop.time() < deadline and len(set(received)) < total:
                await asyncio.sleep(0.1)
            if sub.done():
                sub.result()
            sub.cancel()
            state["proc"].send_signal(signal.SIGTERM)
            await loop.run_in_executor(None, state["proc"].wait)
            return acked, received, out.decode(), status, rss
        finally:
            # A failure or timeout above must not leave the proxy or the
            # attacker running after the test.
            for proc in (state["proc"], attacker):
                if proc is not None and proc.poll() is None:
                    kill(proc)

    acked, received, attack, status, rss = asyncio.run(main())
    seen = set(received)
    lost = [(i, s) for i in acked for s in acked[i] if (i, s) not in seen]
    cases = dict(line.rsplit("=", 1) for line in attack.splitlines() if "=" in line)
    print("attack: %d kinds, %d attempts: %s" % (len(cases), sum(int(v) for v in cases.values()), cases))
    print("honest: %d acknowledged (TCP %d, UDP %d), %d delivered, %d lost; proxy RSS before each kill %s KB"
          % (sum(len(v) for v in acked.values()), len(acked[0]), len(acked[1]), len(seen), len(lost), rss))
    assert status.returncode == 0, status.stderr    # status got through the attack
    assert not lost, "acknowledged messages lost: %s" % lost[:5]
    assert len(acked[0]) > 50 and len(acked[1]) > 50
    # The attacker's own fresh keys share its flooded address's handshake
    # budget (a stranger's key gets no head start), so only a few of its
    # authenticated sessions get in: enough that their abuse is exercised.
    assert len(cases) >= 15 and int(cases.get("auth session", 0)) >= 1
    assert int(cases.get("subscribes", 0)) > 0 and int(cases.get("publishes to new topics", 0)) > 0
    assert max(rss) < 128 * 1024
