"""The store-and-forward proxy: asyncio runner of the edge session protocol.

Links are TCP connections (frames from a StreamDecoder, fastpath.py) or UDP peer
addresses (one envelope per datagram). Each link carries one
session/proxy.py ProxySession; a hello binds it to a node id, and a newer link
for the same node replaces the older one (a node that roamed). Publishes go
to the Store and are acknowledged from its commit callback, i.e. only once
durable. Deliveries are pumped from the store per subscription, from the
subscriber's cursor, within the session's window.

The Proxy is assembled from the parts that own its state, each in its
module: links.py (open links and sessions, writing to transports),
admission.py (per-address limits, handshakes, hellos), routing.py (events
to the store and commits back), delivery.py (pumping stored messages) and
status.py (the counters). This module holds start-up, shutdown and the
timer.

Memory is bounded whatever clients do: a fixed decoder per TCP connection, a
cap on connections and on pre-hello links per address (the oldest is
evicted, so a stall attack cannot lock out a real node from the same
address), a write-buffer cap (a peer that never reads is cut off), at most
PUBLISH_WINDOW unacknowledged publishes per link, a rate limit per UDP source
address, and bounded session windows. Payloads are never decoded.
"""
import asyncio
import heapq
import logging
import socket
import sys
import time

from shared_protocol.errors import RemoteError
from shared_protocol.session.client import DEAD_AFTER
from upsycle.proxy import fastpath
from upsycle.proxy import status as status_report
from upsycle.proxy.admission import Admission
from upsycle.proxy.delivery import Delivery
from upsycle.proxy.federation import Federation
from shared_protocol.overlay import ids
from upsycle import identity
from upsycle.proxy.links import (GIL_SWITCH_S, HELLO_TIMEOUT_S, TICK_S, TIMER_GRAIN_S, UDP_MAX, Faults,
                                 LinkTable, TcpProtocol, UdpProtocol, kv, now_ms)
from upsycle.proxy.routing import Routing
from upsycle.proxy.store import Store, StorageError  # noqa: F401 (re-exported)

log = logging.getLogger("upsycle.proxy")

# Links whose deadline (hello timeout, a session silent for DEAD_AFTER
# keepalives) passed, visited per tick at most: the rest wait for the next
# tick, so 10,000 sessions falling silent together (a site's uplink lost)
# hold up the event loop a few ms per tick, not ~20 ms at once (every
# message waits behind such a stall). Links are kept by deadline
# (links.py arm_timer): a tick costs what is due, not what is open; a
# session heard from since is armed again at its new deadline
# (tools/bench/bench_scale.py, tests/host/test_proxy_scale.py).
TIMER_VISITS_MAX = 256

# Receive buffer asked for the UDP socket. Datagrams from every node wait
# there while the event loop is busy; the kernel's default (~208 KB) holds
# ~200 of them (each takes ~1 KB of buffer however small), so a burst from
# 1,000 nodes (handshakes as they come up, a round of publishes) overflowed
# it, and a lost message 3 costs its node a new handshake. ~1,000 datagrams,
# not more: what waits here is work queued ahead of every session, and a
# flood of message 1s (each a DH when no rate limit refuses it first) in a
# 4 MB buffer held up the sessions of tests/host/test_proxy_secure.py's
# handshake storm. The kernel caps the request at net.core.rmem_max (a
# start-up warning says so).
UDP_RCVBUF = 1024 * 1024


class BleUnavailable(Exception):
    """--ble was asked for and the radio (or the virtual medium) is not there."""


class Proxy(LinkTable, Admission, Routing, Delivery):
    def __init__(self, config):
        config.check()
        self.config = config
        lim = config.limits
        self.limits = lim
        self.store = Store(config.data, config.retention, max_topics=lim["max_topics"],
                           max_db_bytes=lim["max_db_bytes"], max_topics_per_node=lim["max_topics_per_node"],
                           max_node_subscriptions=lim["max_node_subscriptions"],
                           max_total_subscriptions=lim["max_total_subscriptions"],
                           sub_expiry_s=lim["subscription_expiry_s"])
        self.faults = Faults()
        self._init_links()
        self._init_admission()
        self._init_routing()
        self._init_delivery()
        self.fed = Federation(self)   # links to other proxies (federation.md)
        self.started = time.time()
        self.tcp_server = None
        self.udp_transport = None
        self.udp_endpoint = None
        self.udp_rcvbuf = 0           # the UDP socket's receive buffer, as the kernel granted it
        self._ticker = None
        self._stopped = asyncio.Event()
        self.addresses = {}
        self.ble = None               # upsycle/ble/central.py, with --ble
        # The proxy's static X25519 key (Noise XX), kept in the data directory.
        self.key = None               # loaded in start(), after the store checks the directory
        self.public_key = b""

    # -- life cycle --------------------------------------------------------

    async def start(self):
        loop = asyncio.get_running_loop()
        # The store's writer thread needs the GIL for a moment after each
        # fsync to hand results back; with the default 5 ms switch interval a
        # busy event loop would add up to 5 ms to every acknowledgement.
        sys.setswitchinterval(GIL_SWITCH_S)
        try:
            from upsycle.crypto_nacl import install
            install()   # handshakes at libsodium speed (~0.2 ms each)
        except ImportError:
            log.warning("event=no_libsodium handshakes run in pure Python (slow)")
        self.store.open()
        self.load_known_keys()
        self.key = identity.proxy_key(self.config.data)
        self.public_key = identity.public_key(self.key)
        self.store.start(loop, self.on_commit)
        c = self.config
        # TCP listens only once UDP is bound: a node or test that sees the
        # TCP port open may send datagrams at once (asyncio binds with
        # start_serving=False and calls listen() in start_serving()).
        self.tcp_server = await loop.create_server(lambda: TcpProtocol(self), c.listen, c.tcp_port,
                                                   reuse_address=True, backlog=256, start_serving=False)
        tcp_port = self.tcp_server.sockets[0].getsockname()[1]
        self.addresses["tcp"] = (c.listen, tcp_port)
        udp_port = c.udp_port
        if udp_port == 0 and c.tcp_port == 0:
            udp_port = tcp_port
        if udp_port >= 0:
            self.udp_transport, self.udp_endpoint = await fastpath.open_udp(
                UdpProtocol(self), (c.listen, udp_port), UDP_MAX + 1)
            self.addresses["udp"] = (c.listen, self.udp_transport.get_extra_info("sockname")[1])
            sock = self.udp_transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            self.udp_rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            if self.udp_rcvbuf < UDP_RCVBUF:   # Linux reports twice what it granted
                log.warning("event=udp_rcvbuf_capped %s", kv(
                    asked=UDP_RCVBUF, granted=self.udp_rcvbuf,
                    detail="bursts from many UDP nodes may be dropped; raise the sysctl net.core.rmem_max"))
        self.store.origin_id = ids.proxy_id(self.public_key)
        if c.ble:
            await self._start_ble()
        await self.tcp_server.start_serving()
        self.fed.start(self.addresses["tcp"])
        await self.fed.start_lan(c.listen)
        self._ticker = asyncio.ensure_future(self._tick())
        n, b = self.store.stored_totals()
        log.info("event=proxy_started %s", kv(
            tcp="%s:%d" % self.addresses["tcp"],
            udp=("%s:%d" % self.addresses["udp"]) if "udp" in self.addresses else "off",
            data=c.data, proxy_id=self.store.proxy_id, topics=len(self.store.topics),
            stored_messages=n, stored_bytes=b, proxy_key=self.public_key.hex(),
            plaintext="allowed" if c.allow_plaintext else "refused"))
        print("upsycle proxy: public key %s" % self.public_key.hex(), file=sys.stderr, flush=True)

    async def _start_ble(self):
        """BLE links run their sessions as UDP ones: their datagrams enter
        through on_datagram and leave through udp_transport, which becomes a
        router sending BLE addresses to the BLE central."""
        from upsycle.ble.central import BleCentral, DatagramRouter
        c = self.config
        scanner = client = radio = None
        if c.ble_medium:
            from upsycle.ble.backend import VirtualRadio, virtual_backends
            from upsycle.proxy.config import parse_hostport
            host, port = parse_hostport(c.ble_medium)
            radio = VirtualRadio(host, port, group=c.ble_group)
            scanner, client = virtual_backends(radio)
        self.ble = BleCentral(self, self.limits["max_ble_links"], self.limits["ble_idle_s"], scanner, client, radio)
        self.udp_transport = DatagramRouter(self.udp_transport, self.ble)
        try:
            await self.ble.start()
        except ImportError:
            raise
        except Exception as e:   # BlueZ or its D-Bus absent, no adapter, no medium: bleak's errors vary
            raise BleUnavailable("Bluetooth LE did not start (%s: %s): is BlueZ running with an adapter? "
                                 "Without a radio, --ble-medium HOST:PORT uses the virtual one"
                                 % (type(e).__name__, e)) from None
        self.addresses["ble"] = c.ble_medium or "bluez"

    async def stop(self):
        if self.ble is not None:
            await self.ble.stop()
        if self._ticker is not None:
            self._ticker.cancel()
        self.fed.stop()
        if self.tcp_server is not None:
            self.tcp_server.close()
        # Each link is told and closed without waiting on it; one log line
        # for all: a line per session was a third of the stop's cost with
        # thousands of them (tools/bench/bench_scale.py, "stop s").
        sessions = len(self.sessions)
        links = list(self.links)
        for link in links:
            link.ps.bye("proxy_shutdown")
            self.flush(link)
            self.close_link(link, "shutdown")
        log.info("event=links_closed %s", kv(links=len(links), sessions=sessions, reason="shutdown"))
        if self.udp_transport is not None:
            self.udp_transport.close()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        log.info("event=proxy_stopped %s", kv(commits=self.store.commits))
        self._stopped.set()

    async def _tick(self):
        while True:
            await asyncio.sleep(TICK_S)
            t = now_ms()
            mono = time.monotonic()
            # Every tick: UDP links with deliveries in flight (retransmission)
            # and UDP handshakes (message 2 again); both bounded by what is
            # in progress, not by the links open.
            busy = [lk for lk in self._retx if not lk.closed and lk.ps.in_flight()]
            self._retx = set(busy)
            for link in busy + list(self.udp_hs.values()):
                self._visit(link, t, mono)
            self._due_links(t, mono)

    def _due_links(self, t, mono):
        """Visit the links whose deadline passed (TIMER_VISITS_MAX a tick)."""
        wheel, slots = self._wheel, self._slots
        now_slot = mono / TIMER_GRAIN_S
        n = 0
        while slots and slots[0] <= now_slot and n < TIMER_VISITS_MAX:
            slot = slots[0]
            links = wheel[slot]
            while links and n < TIMER_VISITS_MAX:
                link = links.pop()
                self._armed -= 1
                if link.closed or link.due != slot:
                    continue   # closed, or armed again in another slot
                link.due = 0
                n += 1
                # (arm_timer puts a link in a later slot than this one)
                if link.node is None:
                    if mono - link.opened > HELLO_TIMEOUT_S:
                        self._visit(link, t, mono)   # closes it
                    else:
                        self.arm_timer(link, link.opened + HELLO_TIMEOUT_S + TICK_S)
                    continue
                ps = link.ps
                if (ps.last_rx + DEAD_AFTER * ps.keepalive_ms) / 1000.0 > mono:
                    self.arm_session(link)   # heard from since it was armed
                    continue
                self._visit(link, t, mono)
                if not link.closed:
                    self.arm_timer(link, mono + TICK_S)
            if not links:
                if wheel.get(slot) is links:
                    del wheel[slot]
                if slots and slots[0] == slot:
                    heapq.heappop(slots)

    def _visit(self, link, t, mono):
        """Hello timeouts, UDP handshake retransmission, and the session's
        own timers (expiry, go-back-N resends)."""
        if link.closed:
            return
        if link.node is None and mono - link.opened > HELLO_TIMEOUT_S:
            self.faults.note("handshake_timeout" if link.mode == "hs" else "hello_timeout", peer=link.name())
            self.close_link(link, "hello_timeout")
            return
        if link.mode == "hs":
            if link.kind == "udp" and link.sec is not None:
                try:
                    link.sec.tick(t)
                except RemoteError:
                    pass   # the hello timeout above closes it
                for pkt in link.sec.packets_to_send():
                    self.udp_transport.sendto(pkt, link.addr)
            return
        ps = link.ps
        ps.poll(t)
        self.handle_events(link)
        if not link.closed:
            self.flush(link)

    def status(self):
        return status_report.report(self)
