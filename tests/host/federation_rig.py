"""Several real proxy processes on loopback, linked through relays the test
controls (so it can cut links between groups of proxies and restore them).

Proxy i listens on its own loopback address 127.0.0.(10+i) (proxies dial
their peers from the address they listen on, so a relay knows who dials)
and advertises 127.0.0.1:<relay i>; every proxy link to proxy i goes
through relay i, which refuses and cuts links between proxies of
different groups while a partition is on.
"""
import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys

from proxy_rig import ENV, ROOT, free_port
from upsycle.processes import kill, stop, wait_port
from upsycle.proxy.status import fetch_status


def host_of(i):
    return "127.0.0.%d" % (10 + i)


class Relay:
    """TCP relay 127.0.0.1:port -> proxy i; cuts links across groups."""

    def __init__(self, rig, i):
        self.rig = rig
        self.i = i
        self.port = free_port()
        self.server = None
        self.pairs = []        # (src index or None, writer a, writer b)

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", self.port)

    def _src(self, peer_ip):
        for j in range(len(self.rig.ports)):
            if peer_ip == host_of(j):
                return j
        return None

    async def _conn(self, reader, writer):
        src = self._src(writer.get_extra_info("peername")[0])
        if not self.rig.linked(src, self.i):
            writer.close()
            return
        try:
            r2, w2 = await asyncio.open_connection(host_of(self.i), self.rig.ports[self.i])
        except OSError:
            writer.close()
            return
        entry = (src, writer, w2)
        self.pairs.append(entry)

        async def pipe(r, w):
            try:
                while True:
                    data = await r.read(65536)
                    if not data:
                        break
                    w.write(data)
                    await w.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                w.close()
        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))
        if entry in self.pairs:
            self.pairs.remove(entry)

    def cut(self):
        for src, a, b in list(self.pairs):
            if not self.rig.linked(src, self.i):
                a.transport.abort()
                b.transport.abort()

    def close(self):
        for _src, a, b in self.pairs:
            a.transport.abort()
            b.transport.abort()
        if self.server is not None:
            self.server.close()


class Federation:
    """n proxies in tmp dirs, each knowing the relays of ``seeds``."""

    def __init__(self, tmp, n, seeds=(0,), policy="open", period=0.3, catchup=0.5, extra=()):
        self.tmp = str(tmp)
        self.n = n
        self.ports = [free_port() for _ in range(n)]
        self.relays = []
        self.procs = [None] * n
        self.seeds = seeds
        self.policy = policy
        self.period = period
        self.catchup = catchup
        self.extra = list(extra)
        self.groups = None     # index -> group while partitioned

    def linked(self, src, dst):
        if self.groups is None or src is None:
            return True
        return self.groups.get(src) == self.groups.get(dst)

    def data(self, i):
        return os.path.join(self.tmp, "proxy%d" % i)

    async def start(self):
        for i in range(self.n):
            r = Relay(self, i)
            await r.start()
            self.relays.append(r)
        for i in range(self.n):
            await self.start_proxy(i)

    def args(self, i):
        a = [sys.executable, "-m", "upsycle", "proxy", "--data", self.data(i),
             "--listen", "%s:%d" % (host_of(i), self.ports[i]),
             "--advertise", "127.0.0.1:%d" % self.relays[i].port, "--peer-policy", self.policy,
             "--overlay-period", str(self.period), "--catchup-period", str(self.catchup)]
        for s in self.seeds:
            if s != i:
                a += ["--peer", "127.0.0.1:%d" % self.relays[s].port]
        if self.seeds and i == self.seeds[0] and len(self.seeds) == 1 and self.n > 1:
            a += ["--peer", "127.0.0.1:%d" % self.relays[(i + 1) % self.n].port]
        return a + self.extra

    async def start_proxy(self, i):
        log = open(os.path.join(self.tmp, "proxy%d.log" % i), "ab")
        self.procs[i] = subprocess.Popen(self.args(i), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_port(self.ports[i], proc=self.procs[i], host=host_of(i)))

    def sigkill(self, i):
        kill(self.procs[i])
        self.procs[i] = None

    def partition(self, *groups):
        self.groups = {}
        for g, members in enumerate(groups):
            for m in members:
                self.groups[m] = g
        for r in self.relays:
            r.cut()

    def heal(self):
        self.groups = None

    async def status(self, i):
        return await fetch_status(host_of(i), self.ports[i])

    def log(self, i):
        with open(os.path.join(self.tmp, "proxy%d.log" % i), "rb") as f:
            return f.read().decode(errors="replace")

    def rows(self, i, topic):
        """(seq, msg_id) of the topic's stored messages at proxy i, from its SQLite file."""
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data(i), "proxy.sqlite3"), uri=True)
        try:
            return [(s, bytes(m)) for s, m in db.execute(
                "SELECT seq, msg_id FROM messages WHERE topic=? ORDER BY seq", (topic,))]
        finally:
            db.close()

    def close_relays(self):
        """In the event loop the relays run in, before it ends."""
        for r in self.relays:
            r.close()
        self.relays_closed = True

    def close(self):
        for p in self.procs:
            if p is not None:
                stop(p)


class _Faults:
    def __init__(self):
        self.counts = {}

    def note(self, cause, n=1, **fields):
        self.counts[cause] = self.counts.get(cause, 0) + n


class FakePeer:
    """A proxy link made by the test (upsycle.proxy.peers.Dialer, the real
    initiator) that sends whatever the test wants and records what comes."""

    def __init__(self, seed, hello_key=None):
        from shared_protocol.crypto import api
        from shared_protocol.overlay import ids
        self.key = hashlib.sha256(b"fake-peer:" + seed).digest()
        self.public_key = api.x25519_public(self.key)
        self.hello_key = hello_key
        self.id = ids.proxy_id(self.public_key)
        self.addr = b"127.0.0.1:9"
        self.source_host = None
        self.proxy = self
        self.faults = _Faults()
        self.got = []
        self.channel = None
        self.closed = asyncio.Event()

    async def connect(self, host, port):
        from upsycle.proxy import peers
        if self.hello_key is not None:
            # Say another proxy's key in the hello (the handshake proves ours).
            pk = self.public_key
            self.public_key = self.hello_key
        d, cause = await peers.dial(self, host, port)
        if self.hello_key is not None:
            self.public_key = pk
        return cause

    # the Federation's side of a Dialer
    def dialled(self, dialer, addr):
        from upsycle.proxy import peers
        self.channel = peers.Channel(ids_of(dialer.remote_key), dialer.remote_key, addr, False, dialer=dialer)
        return self.channel

    def proved(self, dialer):
        pass

    def on_peer_message(self, ch, msg):
        self.got.append(msg)

    def channel_closed(self, ch):
        ch.closed = True
        self.closed.set()

    def send(self, name, *values):
        from shared_protocol.wire import envelope as E
        return self.channel.send(E.REGISTRY.encode(name, *values))

    def send_raw(self, data):
        return self.channel.send(data)

    def of(self, name):
        return [m for m in self.got if m.name == name]


def ids_of(key):
    from shared_protocol.overlay import ids
    return ids.proxy_id(key)
