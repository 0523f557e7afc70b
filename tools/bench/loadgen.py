"""A load generator process for the proxy and broker benchmarks.

    python tools/bench/loadgen.py      (spec as one JSON line on stdin, then "go")

One process runs many sessions on one event loop, speaking the real protocols
with the least client work per message, so the system under test and not the
client is the limit (the benchmarks start several of these and report their
CPU):

- ``upsycle``: the edge session (session/messages.py) over TCP frames or UDP
  datagrams, plaintext or Noise XX (the shared handshake, then the host's
  libsodium transport, upsycle.noise_fast); data-path messages through
  upsycle.wire_fast. Publishes keep at most ``window`` unacknowledged
  (s_puback comes once the message is durable); deliveries are acknowledged
  cumulatively once per read (s_dack), as the host client does.
- ``mqtt``: MQTT 3.1.1 at QoS 1 over TCP (CONNECT, SUBSCRIBE, PUBLISH,
  PUBACK), for Mosquitto when it must hold many connections.

Protocol with the parent: it writes the spec (one JSON line), this process
connects and subscribes every session and prints ``{"ready": ...}``; the
parent writes ``go``; this process publishes, waits for what it expects
(or ``duration_s`` plus ``drain_s``) and prints one JSON line of results:
counts, latencies in microseconds (publish -> delivery; the payload carries
the sender's wall clock in ns) and its own CPU seconds during the run.

Spec: {"proto", "transport", "secure", "host", "port", "window", "payload",
"sessions": [[node_label, source_ip, pub_topic|null, count, rate, [sub topics],
expect], ...], "duration_s", "drain_s", "keepalive_ms"}. rate 0: as fast as
the window allows; count 0 with a rate: publish until duration_s.
"""
import asyncio
import hashlib
import heapq
import random
import json
import os
import resource
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [os.path.join(ROOT, "host"), ROOT]

from shared_protocol.wire import envelope as E  # noqa: E402
from shared_protocol.session import messages as W  # noqa: E402
from shared_protocol.crypto import api  # noqa: E402
from shared_protocol.noise.handshake import Handshake  # noqa: E402
from shared_protocol.noise.errors import HandshakeTimedOut, SessionUnknown  # noqa: E402
from shared_protocol.noise.udp import UdpSession, KIND_DATA  # noqa: E402
from shared_protocol.session.secure_client import PROLOGUE, node_id_for  # noqa: E402
from upsycle import crypto_nacl, noise_fast, wire_fast  # noqa: E402

crypto_nacl.install()
_deliver_fields = wire_fast.deliver_fields
_puback_id = wire_fast.puback_id
# Resend an unacknowledged publish or subscribe over UDP after this long.
UDP_RTO_S = 0.3
_ts = struct.Struct(">QQ")


def topic_id(name):
    return hashlib.sha256(name.encode()).digest()[:16]


def node_for(label, salt, secure):
    """(static key, node id) of a loadgen session: derived from its label, so
    a benchmark can name a session's node before it connects."""
    static = hashlib.sha256(b"loadgen-key" + label.encode() + salt).digest()
    if secure:
        return static, node_id_for(api.x25519_public(static))
    return static, hashlib.sha256(label.encode() + salt).digest()[:16]


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def runq_wait():
    """Seconds this process was runnable but waiting for a CPU (Linux
    schedstat, summed over its threads): high means the machine, not this
    generator's own work, held it back."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/schedstat" % tid) as f:
                total += int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return total / 1e9


class Stats:
    def __init__(self):
        self.lat = []
        self.got = 0
        self.sent = 0
        self.acked = 0
        self.expect = 0
        self.done = asyncio.Event()
        self.t_last = 0.0

    def delivered(self, payload, now_ns):
        self.lat.append((now_ns - _ts.unpack_from(payload)[0]) // 1000)
        self.got += 1
        if self.got >= self.expect > 0:
            self.t_last = time.time()
            self.done.set()


class Session:
    """Shared publishing logic: a window of unacknowledged publishes."""

    def __init__(self, g, label, pub, count, rate, subs):
        self.g = g
        self.label = label
        self.pub = pub
        self.count = count
        self.rate = rate
        self.subs = subs
        self.published = 0
        self.inflight = {}
        self.ready = asyncio.get_running_loop().create_future()
        self.pad = b"x" * max(0, g.payload - 16)
        self.allowed = 0        # paced mode: publishes due so far
        self.state = "open"
        self.pending_subs = ()

    def payload(self):
        return _ts.pack(time.time_ns(), self.published) + self.pad

    def may_publish(self):
        if self.pub is None or len(self.inflight) >= self.g.window:
            return False
        if self.count and self.published >= self.count:
            return False
        return not self.rate or self.published < self.allowed

    def fill(self):
        out = []
        while self.may_publish():
            out.append(self.make_publish())
            self.published += 1
        if out:
            self.send_many(out)


class UpsycleSession(Session, asyncio.Protocol, asyncio.DatagramProtocol):
    def __init__(self, g, label, pub, count, rate, subs):
        Session.__init__(self, g, label, pub, count, rate, subs)
        self.static, self.node = node_for(label, g.salt, g.secure)
        self.prefix = self.node[:W.MSG_ID_NODE_BYTES]
        self.topic = topic_id(pub) if pub else None
        self.sub_ids = dict((topic_id(t), -1) for t in subs)
        self.pending_subs = set(self.sub_ids)
        self.seq = 0
        self.tr = None
        self.dec = wire_fast.StreamDecoder()
        self.send_cs = self.recv_cs = None
        self.hs = None
        self.udp = None
        self.chan = None
        self.state = "hs" if g.secure else "open"
        self.acks = {}

    # -- link ---------------------------------------------------------------
    def connection_made(self, tr):
        self.tr = tr
        if self.g.secure and self.g.udp:
            self.udp_handshake()
        elif self.g.secure:
            self.hs = Handshake(True, self.static, os.urandom(32), PROLOGUE)
            tr.write(wire_fast.frame(self.hs.write_message(b""), 65535))
        else:
            self.hello()

    def udp_handshake(self):
        """A new Noise handshake over UDP: at the start, and as a node does
        when the proxy answers that it has no session for our packets (its
        message 3 was lost: a burst overflowed its socket buffer) or the
        handshake timed out."""
        if self.udp is not None and not self.g.spec.get("subscribe_on_go"):
            self.pending_subs = set(self.sub_ids)   # a new session: subscribe again after its welcome
        self.hs = Handshake(True, self.static, os.urandom(32), PROLOGUE)
        self.udp = UdpSession(self.hs, cipher=noise_fast.fast)
        self.chan = None
        self.state = "hs"
        self.udp.start(int(time.monotonic() * 1000))
        for p in self.udp.packets_to_send():
            self.tr.sendto(p)

    def hello(self):
        self.state = "hello"
        self.send_many([E.REGISTRY.encode("s_hello", self.node, 60000, self.g.window)])

    def send_many(self, msgs):
        if self.g.udp:
            if self.chan is not None:
                send = self.udp.send   # keeps the tags a "no session" answer names
                for m in msgs:
                    self.tr.sendto(send(m))
            else:
                for m in msgs:
                    self.tr.sendto(m)
        elif self.send_cs is not None:
            enc = self.send_cs.encrypt_with_ad
            self.tr.write(wire_fast.frames([enc(b"", m) for m in msgs]))
        else:
            self.tr.write(wire_fast.frames(msgs))

    def data_received(self, data):
        if self.hs is not None and self.send_cs is None:
            for f in self.dec.feed(data):
                if self.send_cs is not None:
                    self.on_message(self.recv_cs.decrypt_with_ad(b"", f))
                    continue
                self.hs.read_message(f)
                self.tr.write(wire_fast.frame(self.hs.write_message(b""), 65535))
                a, b = self.hs.split()
                self.send_cs, self.recv_cs = noise_fast.fast(a), noise_fast.fast(b)
                self.hello()
            self.after_read()
            return
        if self.recv_cs is not None:
            dec = self.recv_cs.decrypt_with_ad
            for f in self.dec.feed(data):
                self.on_message(dec(b"", f))
        else:
            for f in self.dec.feed(data):
                self.on_message(f)
        self.after_read()

    def datagram_received(self, data, addr):
        if self.udp is not None:
            if data[0] == KIND_DATA and self.chan is not None:
                self.on_message(self.chan.open(data[1:]))
            else:
                try:
                    evs = self.udp.receive(data, int(time.monotonic() * 1000))
                except SessionUnknown:
                    self.g.errors["udp_rehandshake"] = self.g.errors.get("udp_rehandshake", 0) + 1
                    self.udp_handshake()
                    return
                for p in self.udp.packets_to_send():
                    self.tr.sendto(p)
                if self.udp.established and self.chan is None:
                    self.chan = self.udp.channel
                    self.hello()
                for ev in evs:
                    if hasattr(ev, "data"):
                        self.on_message(ev.data)
        else:
            self.on_message(data)
        self.after_read()

    def error_received(self, exc):
        pass

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("%s: link lost before ready" % self.label))

    # -- session --------------------------------------------------------------
    def on_message(self, m):
        g = self.g
        # A delivery or an acknowledgement (one each per message) in its
        # usual form: read in one call; anything else through decode.
        v = _deliver_fields(m)
        if v is not None:
            t, seq = v[0], v[1]
            last = self.sub_ids.get(t)
            if last is None:
                return
            if seq == last + 1 or last < 0:
                self.sub_ids[t] = seq
                st = g.stats
                st.lat.append((time.time_ns() - _ts.unpack_from(v[3])[0]) // 1000)
                st.got += 1
                if st.got >= st.expect > 0:
                    st.t_last = time.time()
                    st.done.set()
                self.acks[t] = seq
                return
            name = "s_deliver"
        else:
            mid = _puback_id(m)
            if mid is not None:
                if self.inflight.pop(mid, None) is not None:
                    g.stats.acked += 1
                return
            name, v = wire_fast.decode(m)
        if name == "s_deliver":
            t, seq = v[0], v[1]
            last = self.sub_ids.get(t)
            if last is None:
                return
            if seq == last + 1 or last < 0:
                self.sub_ids[t] = seq
                g.stats.delivered(v[3], time.time_ns())
            elif seq > last:
                g.errors["gap"] = g.errors.get("gap", 0) + 1
            else:
                g.errors["duplicate"] = g.errors.get("duplicate", 0) + 1
            self.acks[t] = self.sub_ids[t]
        elif name == "s_puback":
            if self.inflight.pop(v[0], None) is not None:
                g.stats.acked += 1
        elif name == "s_missed":
            self.sub_ids[v[0]] = v[1]
            self.acks[v[0]] = v[1]
        elif name == "s_welcome":
            if self.state == "hello":
                self.state = "open"
                if self.pending_subs and not g.spec.get("subscribe_on_go"):
                    self.send_many([E.REGISTRY.encode("s_subscribe", t) for t in sorted(self.pending_subs)])
                elif not self.ready.done():
                    self.ready.set_result(True)
        elif name == "s_subscribed":
            self.pending_subs.discard(v[0])
            if self.sub_ids.get(v[0]) == -1:
                self.sub_ids[v[0]] = v[1]
            if not self.pending_subs and not self.ready.done():
                self.ready.set_result(True)
        elif name == "error" or name == "s_reject":
            g.errors[str(v[1])] = g.errors.get(str(v[1]), 0) + 1
            if name == "s_reject":
                self.inflight.pop(v[0], None)

    def after_read(self):
        out = []
        if self.acks:
            for t, s in self.acks.items():
                out.append(wire_fast.encode_dack(t, s))
            self.acks = {}
        if self.g.running:
            while self.may_publish():
                out.append(self.make_publish())
                self.published += 1
        if out:
            self.send_many(out)

    def make_publish(self):
        self.seq += 1
        mid = self.prefix + self.seq.to_bytes(8, "big")
        m = wire_fast.encode_publish(self.topic, mid, self.payload())
        self.inflight[mid] = (m, time.monotonic())
        self.g.stats.sent += 1
        return m

    def retransmit(self, now):
        if not self.g.udp:
            return
        if self.udp is not None and self.chan is None:
            try:
                self.udp.tick(int(now * 1000))
            except HandshakeTimedOut:
                self.g.errors["udp_rehandshake"] = self.g.errors.get("udp_rehandshake", 0) + 1
                self.udp_handshake()
                return
            for p in self.udp.packets_to_send():
                self.tr.sendto(p)
            return
        if self.state == "hello":
            self.hello()
        old = [m for m, t in self.inflight.values() if now - t > UDP_RTO_S]
        if self.state == "open" and self.pending_subs:
            old += [E.REGISTRY.encode("s_subscribe", t) for t in sorted(self.pending_subs)]
        if old and (self.udp is None or self.chan is not None):
            for mid in list(self.inflight):
                m, t = self.inflight[mid]
                if now - t > UDP_RTO_S:
                    self.inflight[mid] = (m, now)
                    self.g.errors["resent"] = self.g.errors.get("resent", 0) + 1
            self.send_many(old)


class MqttSession(Session, asyncio.Protocol):
    def __init__(self, g, label, pub, count, rate, subs):
        Session.__init__(self, g, label, pub, count, rate, subs)
        self.buf = b""
        self.pid = 0
        self.tr = None
        self.topic = pub.encode() if pub else None
        self.sub_pending = len(subs)

    def connection_made(self, tr):
        self.tr = tr
        cid = self.label.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid
        tr.write(b"\x10" + self.varint(len(body)) + body)

    @staticmethod
    def varint(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def send_many(self, msgs):
        self.tr.write(b"".join(msgs))

    def make_publish(self):
        self.pid = self.pid % 65535 + 1
        p = self.payload()
        body = struct.pack(">H", len(self.topic)) + self.topic + struct.pack(">H", self.pid) + p
        self.inflight[self.pid] = True
        self.g.stats.sent += 1
        return b"\x32" + self.varint(len(body)) + body

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        p, end = 0, len(buf)
        out = []
        g = self.g
        while p + 2 <= end:
            h = buf[p]
            n, k, shift = 0, p + 1, 0
            while True:
                if k >= end:
                    n = -1
                    break
                b = buf[k]
                n |= (b & 0x7F) << shift
                k += 1
                shift += 7
                if not b & 0x80:
                    break
            if n < 0 or k + n > end:
                break
            body = buf[k:k + n]
            p = k + n
            kind = h >> 4
            if kind == 3:   # PUBLISH to us
                tl = (body[0] << 8) | body[1]
                q = 2 + tl
                if h & 0x06:
                    out.append(b"\x40\x02" + body[q:q + 2])
                    q += 2
                g.stats.delivered(body[q:], time.time_ns())
            elif kind == 4:   # PUBACK
                if self.inflight.pop((body[0] << 8) | body[1], None):
                    g.stats.acked += 1
            elif kind == 2:   # CONNACK
                if self.subs:
                    for i, t in enumerate(self.subs):
                        tb = t.encode()
                        sb = struct.pack(">H", i + 1) + struct.pack(">H", len(tb)) + tb + b"\x01"
                        out.append(b"\x82" + self.varint(len(sb)) + sb)
                elif not self.ready.done():
                    self.ready.set_result(True)
            elif kind == 9:   # SUBACK
                self.sub_pending -= 1
                if self.sub_pending <= 0 and not self.ready.done():
                    self.ready.set_result(True)
        self.buf = buf[p:]
        if g.running:
            while self.may_publish():
                out.append(self.make_publish())
                self.published += 1
        if out:
            self.tr.write(b"".join(out))

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("%s: link lost before ready" % self.label))

    def retransmit(self, now):
        pass


class Gen:
    def __init__(self, spec):
        self.spec = spec
        self.window = spec.get("window", 128)
        self.payload = spec.get("payload", 64)
        self.secure = spec.get("secure", False)
        self.udp = spec.get("transport", "tcp") == "udp"
        self.salt = spec.get("salt", "").encode()
        self.stats = Stats()
        self.errors = {}
        self.running = False
        self.sessions = []

    async def open_one(self, row, sem):
        label, src, pub, count, rate, subs, expect = row
        loop = asyncio.get_running_loop()
        cls = MqttSession if self.spec["proto"] == "mqtt" else UpsycleSession
        async with sem:
            s = cls(self, label, pub, count, rate, subs)
            host, port = self.spec["host"], self.spec["port"]
            local = (src, 0) if src else None
            if self.udp:
                await loop.create_datagram_endpoint(lambda: s, remote_addr=(host, port), local_addr=local)
            else:
                await loop.create_connection(lambda: s, host, port, local_addr=local)
            ready_s = self.spec.get("ready_s", 20)
            for _ in range(int(ready_s * 2)):
                try:
                    await asyncio.wait_for(asyncio.shield(s.ready), 0.5)
                    break
                except asyncio.TimeoutError:
                    s.retransmit(time.monotonic())
            else:
                raise ConnectionError("%s: not ready in %d s (state %s, handshake %s, subscribes pending %d)" % (
                    label, ready_s, s.state, "done" if getattr(s, "chan", None) is not None or
                    getattr(s, "send_cs", None) is not None else "open", len(s.pending_subs)))
        self.sessions.append(s)
        self.stats.expect += expect

    def finished(self, stopped):
        if self.stats.got < self.stats.expect:
            return False
        for s in self.sessions:
            if s.inflight or (not stopped and s.count and s.published < s.count):
                return False
        return True

    async def ticker(self, t0):
        """Paced publishers: a heap of (next due time, session), so the cost
        is per publish, not per session and tick (10,000 sessions at 0.1/s)."""
        rnd = random.Random(len(self.sessions))
        heap = [(t0 + rnd.random() / s.rate, i, s) for i, s in enumerate(self.sessions)
                if s.rate and s.pub is not None]
        heapq.heapify(heap)
        next_rtx = t0 + 0.25
        while True:
            await asyncio.sleep(0.002)
            now = time.monotonic()
            touched = []
            while heap and heap[0][0] <= now and self.running:
                due, i, s = heap[0]
                s.allowed += 1
                touched.append(s)
                heapq.heapreplace(heap, (due + 1.0 / s.rate, i, s))
            for s in touched:
                s.fill()
            if now >= next_rtx:
                next_rtx = now + 0.25
                for s in self.sessions:
                    if s.inflight or s.state != "open" or s.pending_subs:
                        s.retransmit(now)

    async def run(self, rd):
        sem = asyncio.Semaphore(self.spec.get("connect_parallel", 64))
        t0 = time.monotonic()
        await asyncio.gather(*(self.open_one(r, sem) for r in self.spec["sessions"]))
        print(json.dumps({"ready": len(self.sessions), "connect_s": time.monotonic() - t0}), flush=True)
        await rd.readline()   # "go"
        c0 = cpu()
        q0 = runq_wait()
        w0 = time.time()
        self.running = True
        tick = asyncio.ensure_future(self.ticker(time.monotonic()))
        for s in self.sessions:
            if self.spec.get("subscribe_on_go") and s.pending_subs:
                s.send_many([E.REGISTRY.encode("s_subscribe", t) for t in sorted(s.pending_subs)])
            if not s.rate:
                s.fill()
        dur = self.spec.get("duration_s", 0)
        if dur:
            await asyncio.sleep(dur)
            self.running = False
            end = time.monotonic() + self.spec.get("drain_s", 2.0)
        else:
            end = time.monotonic() + self.spec.get("timeout_s", 300)
        while time.monotonic() < end and not self.finished(bool(dur)):
            await asyncio.sleep(0.005)
        tick.cancel()
        c1 = cpu()
        q1 = runq_wait()
        st = self.stats
        res = {"sent": st.sent, "acked": st.acked, "got": st.got, "expect": st.expect, "t0": w0,
               "t_last": st.t_last or time.time(), "cpu_s": c1 - c0, "wait_s": q1 - q0, "lat_us": st.lat, "errors": self.errors,
               "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
        print(json.dumps(res), flush=True)


async def main():
    loop = asyncio.get_running_loop()
    rd = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(rd), sys.stdin)
    spec = json.loads(await rd.readline())
    await Gen(spec).run(rd)


if __name__ == "__main__":
    asyncio.run(main())
