"""Proxies heard on the LAN (docs/federation.md, "Finding peers").

With ``lan_discovery = "GROUP:PORT"`` a proxy multicasts ``fed_announce``
(its static public key and the address it is reached at) to that group
every gossip period and listens there. An announcement is only a hint: the
proxy puts the announcer in its CYCLON view (as a seed) and pins the
announced key for it, so a dial to it must prove that key in the Noise
handshake; under ``peer_policy = "listed"`` only listed keys are taken.
Off by default: a proxy says nothing on the LAN unless asked to.
"""
import asyncio
import ipaddress
import logging
import socket
import time

from shared_protocol.errors import UpsycleError
from shared_protocol.overlay import ids
from shared_protocol.wire import envelope as E
from upsycle.proxy import peer_wire, peers

log = logging.getLogger("upsycle.proxy")

# Announcements taken per second (others are dropped unread): one per
# proxy per gossip period is what honest proxies send.
ANNOUNCE_RATE = 20.0
# The largest announcement: a 32-byte key and a 64-byte address, enveloped.
ANNOUNCE_MAX = 128
# Hop limit of announcements: the LAN only.
MULTICAST_TTL = 1


class LanPeers(asyncio.DatagramProtocol):
    def __init__(self, fed, group, port, iface):
        self.fed = fed
        self.group = group
        self.port = port
        self.iface = iface
        self.transport = None
        self.tokens = ANNOUNCE_RATE
        self.t = time.monotonic()
        self.heard = 0

    def datagram_received(self, data, addr):
        t = time.monotonic()
        self.tokens = min(ANNOUNCE_RATE, self.tokens + (t - self.t) * ANNOUNCE_RATE)
        self.t = t
        if self.tokens < 1.0:
            self.fed.count("lan_flood")
            return
        self.tokens -= 1.0
        faults = self.fed.proxy.faults
        if len(data) > ANNOUNCE_MAX:
            faults.note("lan_bad_announce", peer="%s:%s" % addr[:2])
            return
        try:
            msg = E.REGISTRY.decode(data)
        except UpsycleError:
            faults.note("lan_bad_announce", peer="%s:%s" % addr[:2])
            return
        if msg.type is not peer_wire.ANNOUNCE:
            faults.note("lan_bad_announce", peer="%s:%s" % addr[:2])
            return
        key, where = bytes(msg["key"]), bytes(msg["addr"])
        if key == self.fed.public_key:
            return   # our own, looped back
        if len(key) != peer_wire.KEY_LEN or peers.split_addr(where) is None:
            faults.note("lan_bad_announce", peer="%s:%s" % addr[:2])
            return
        self.fed.heard_on_lan(ids.proxy_id(key), key, where)
        self.heard += 1

    def error_received(self, exc):
        self.fed.count("lan_socket_error")

    def announce(self):
        if self.transport is not None:
            self.transport.sendto(E.REGISTRY.encode("fed_announce", self.fed.public_key, self.fed.addr),
                                  (self.group, self.port))


async def open_lan(fed, spec, listen_host):
    """The LAN discovery endpoint for "GROUP:PORT", on the interface of
    listen_host (if it is one address) or the system's default."""
    group, port = peers.parse_hostport(spec)
    if not ipaddress.ip_address(group).is_multicast:
        raise peers.ConfigError("lan_discovery %r: not a multicast group" % spec)
    iface = "0.0.0.0"
    try:
        ip = ipaddress.ip_address(listen_host)
        if not ip.is_unspecified:
            iface = str(ip)
    except ValueError:
        pass
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)   # several proxies on one host
    s.bind(("", port))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(iface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    s.setblocking(False)
    proto = LanPeers(fed, group, port, iface)
    tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: proto, sock=s)
    proto.transport = tr
    return proto
