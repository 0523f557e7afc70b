"""The node's LAN link: the socket, timers and addresses around the
sans-I/O LAN layer (shared_protocol/overlay/lan.py: announcements, CYCLON, DMC
anti-entropy sealed with the topic keys).

Imported only by a node whose config has a ``lan`` section
(firmware/core.py ``Node.open_lan``): a node without one never loads it,
nor lan, cyclon, dmc.sync, framing or rand (their bytecode would sit in a
board's heap for nothing). firmware/config.py has checked the section.
"""
import socket

from shared_protocol import clock
from shared_protocol.overlay.lan import node_lan, parse_addr

from firmware import platform

try:
    from micropython import const
except ImportError:   # CPython, where the host tests run this module
    def const(x):
        return x

# Timers: announcements to peers (or broadcast), CYCLON shuffles, and an
# anti-entropy round with one random peer. A few seconds each: a reading
# reaches the LAN neighbours within seconds even without a proxy, and the
# traffic stays a few datagrams per period.
_ANNOUNCE_MS = const(5000)
_SHUFFLE_MS = const(5000)
_SYNC_MS = const(3000)
# The broadcast address announcements go to when no peers are configured.
_BROADCAST = const("255.255.255.255")
# Largest LAN datagram read: a session datagram (runtime.RX_MAX) and room
# for the LAN header.
_RX_MAX = const(1264)
# Datagrams taken from the socket per loop turn (runtime._RX_PER_TURN).
_RX_PER_TURN = const(8)


class LanLink:
    def __init__(self, node, my_ip, port, peers):
        """Open the socket; raises OSError or ValueError (the caller turns
        the LAN off)."""
        self.peers = []
        for p in peers:
            h, pt = parse_addr(p)
            self.peers.append(platform.sockaddr(h, pt))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(platform.sockaddr("0.0.0.0", port))
        if not peers and not platform.IS_VIRTUAL:
            self.peers.append(platform.sockaddr(_BROADCAST, port))
        self.lan = node_lan(node.node_id, my_ip, port, platform.random_bytes, node.topics)
        self.sock = s
        self.poller = platform.Poller(s)
        self._out = []
        self._due = None   # ticks: announce, shuffle, sync (all due on the first turn)

    def status(self):
        return " lan peers %d synced %d" % (len(self.lan.cyclon), self.lan.synced_ops)

    def timers(self, now, out=None):
        """[(sockaddr, datagram)] due now on the LAN, appended to out."""
        lan = self.lan
        if out is None:
            out = []
        due = self._due
        if due is None:   # the first turn: all three are due (a tick has no zero)
            due = self._due = [now, now, now]
        if clock.diff(now, due[0]) >= 0:
            due[0] = clock.add(now, _ANNOUNCE_MS)
            a = lan.announce()
            for p in self.peers:
                out.append((p, a))
        if clock.diff(now, due[1]) >= 0:
            due[1] = clock.add(now, _SHUFFLE_MS)
            out.extend(_resolve(lan.shuffle(now)))
        if clock.diff(now, due[2]) >= 0:
            due[2] = clock.add(now, _SYNC_MS)
            out.extend(_resolve(lan.sync_round(now)))
        return out

    def receive(self, data, src, now):
        return _resolve(self.lan.receive(data, src[0], src[1], now))

    def io(self, now, wdt):
        """One loop turn's LAN traffic: due timers, then what arrived."""
        ls = self.sock
        # one list for every turn's datagrams: an idle turn allocates nothing
        out = self._out
        self.timers(now, out)
        poller = self.poller
        n = 0
        # only a socket with a datagram queued is read (platform.Poller)
        while n < _RX_PER_TURN and poller.ready():
            n += 1
            try:
                data, src = poller.recvfrom(_RX_MAX)
            except OSError:
                break
            platform.keep_room()   # for the next read, at once (runtime.read_proxy)
            # a sync may add readings and a shuffle peers to the view:
            # they go to the lowest free blocks (platform.compact)
            platform.compact()
            out.extend(self.receive(data, _host_port(src), platform.ticks_ms()))
            data = src = None
            wdt.feed()
        for addr, data in out:
            try:
                ls.sendto(data, addr)
            except OSError:
                pass
        if out:
            del out[:]   # (the slice object is an allocation: not on an idle turn)
        if n:
            platform.keep_room()   # a read that raised freed the room too


def _resolve(msgs):
    out = []
    for addr, data in msgs:
        try:
            h, p = parse_addr(addr)
            out.append((platform.sockaddr(h, p), data))
        except ValueError:
            pass
    return out


def _host_port(src):
    # recvfrom gives (host, port) on the virtual board and CPython, a raw
    # sockaddr on some ports (the unix port): normalise to (dotted host, port).
    if isinstance(src, tuple):
        return src[0], src[1]
    try:
        return "%d.%d.%d.%d" % (src[4], src[5], src[6], src[7]), (src[2] << 8) | src[3]
    except (IndexError, TypeError):
        return "0.0.0.0", 0
