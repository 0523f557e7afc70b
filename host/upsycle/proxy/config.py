"""Proxy configuration: a TOML file, overridden by command-line flags.

Example (every key optional; these are the defaults)::

    data = "./upsycle-data"        # data directory (SQLite database lives here)
    listen = "127.0.0.1"           # loopback unless you mean to serve a LAN
    tcp_port = 7883                # 0: pick a free port
    udp_port = 7883                # 0 with tcp_port: same number as TCP; -1: no UDP
    status_from = ["127.0.0.1", "::1"]   # who may ask for status
    allow_plaintext = false        # true: also take unencrypted sessions (tests, benchmarks)
    ble = false                    # true: also serve boards over Bluetooth LE (bleak, BlueZ)
    ble_medium = ""                # "HOST:PORT": the virtual BLE medium instead of BlueZ (tests)
    ble_group = "default"          # the proxy's range group on the virtual medium
    event_loop = "auto"            # "auto": uvloop where installed, else asyncio's; "uvloop", "asyncio": only that

    # Federation with other proxies (docs/federation.md)
    peers = []                     # ["HOST:PORT", "HOST:PORT@HEXKEY", ...]: proxies to link with
    peer_policy = "listed"         # "listed": link only with those; "open": with any proxy
    advertise = ""                 # HOST:PORT other proxies reach us at (default: the listen address)
    overlay_period_s = 5.0         # PolderCast gossip period
    catchup_period_s = 10.0        # summaries to each ring neighbour, per topic
    fanout = 2                     # dissemination fanout F (2..8)
    blip_epsilon = 0.0             # > 0: BLIP-randomised subscription filters (epsilon); 0: exact
    lan_discovery = ""             # "GROUP:PORT": announce and hear proxies on the LAN (multicast)

    [retention]                    # per topic; 0 = no limit of that kind
    max_count = 10000
    max_age_s = 604800             # a week: a node asleep over a weekend still gets its data
    max_bytes = 16777216

    [limits]
    subscriber_queue = 10000       # a subscriber further behind skips the oldest
    max_connections = 1024
    max_connections_per_host = 256 # less than max_connections: room for other addresses
    max_pending_per_host = 64      # links from one address that have not said hello
    max_sessions = 4096
    max_sessions_per_host = 1024   # less than max_sessions
    session_idle_s = 60            # at a session limit, a session idle this long is evicted
    max_subscriptions = 64         # per session
    max_node_subscriptions = 256   # per node id, over all its sessions
    max_total_subscriptions = 100000
    subscription_expiry_s = 2592000  # a node unseen for 30 days loses its subscriptions; 0 = never
    max_topics = 10000
    max_topics_per_node = 1000     # topics one node id created that still exist
    max_db_bytes = 0               # quota for the database; 0 = the disk is the limit
    udp_rate = 5000                # datagrams per second per source address
    udp_burst = 1000
    max_handshakes = 256           # Noise handshakes in progress, all addresses
    max_handshakes_per_host = 16   # ... from one address (the oldest is evicted)
    handshake_rate = 50            # new handshakes per second per address
    handshake_burst = 100
    max_ble_links = 7              # boards connected over BLE at once
    ble_idle_s = 60                # a BLE link that carries no message this long is dropped
"""
import tomllib

from upsycle.proxy.store import Retention
from upsycle.errors import PROXY_CONFIG, HostError

DEFAULT_PORT = 7883


class ConfigError(HostError):
    code = PROXY_CONFIG


# Limits, each with why (the proxy is a Raspberry Pi service for months: every
# per-client structure has a cap so no client behaviour grows memory).
DEFAULT_LIMITS = {
    # Subscriber backlog: 10,000 x 1 KB stays on disk, not in memory; the cap
    # exists so a node gone for a month does not replay a month on wake-up.
    "subscriber_queue": 10000,
    # 1024 TCP connections x (8 KB decoder + 64 KB write cap) < 80 MB worst case.
    "max_connections": 1024,
    # Links from one address: a quarter of max_connections (it must be less),
    # so one address never holds every slot; at the cap the address's least
    # recently active link is evicted for its newcomer.
    "max_connections_per_host": 256,
    # Pre-hello links per address: a real node says hello at once, so more
    # than this from one address is a stall attack; the oldest is evicted.
    "max_pending_per_host": 64,
    "max_sessions": 4096,
    # Sessions from one address: a site's NAT may put all its nodes behind
    # one address, so this is generous; it stops one host from taking all.
    "max_sessions_per_host": 1024,
    # At a session limit, a session without a publish, subscription change or
    # ack for this long (pings do not count) is evicted for a new one; a node
    # that still needs its session reconnects at once.
    "session_idle_s": 60,
    "max_subscriptions": 64,
    # Durable subscriptions of one node id over all its sessions (they outlive
    # a session): four sessions' worth, so one node cannot fill the total.
    "max_node_subscriptions": 256,
    # Durable subscriptions over all nodes (each ~100 bytes in memory).
    "max_total_subscriptions": 100000,
    # A node not seen for this long (no session) loses its subscriptions, so
    # abandoned ones do not hold the total for ever. Longer than the default
    # retention age (a week): its backlog is gone by then anyway.
    "subscription_expiry_s": 30 * 86400,
    "max_topics": 10000,
    # Topics one node id created that still exist (empty topics without a
    # subscriber are forgotten): one node cannot take every topic slot.
    "max_topics_per_node": 1000,
    "max_db_bytes": 0,
    # A node publishing a reading a second needs one datagram a second; 5000/s
    # leaves room for bursts of retransmits and for benchmarks, and caps what
    # one address can make us decode.
    "udp_rate": 5000,
    "udp_burst": 1000,
    # Noise handshakes in progress (each holds ~1 KB of handshake state and
    # costs ~0.2 ms of proxy CPU with libsodium): a storm of half-open
    # handshakes is capped at 256; new ones beyond it are dropped.
    "max_handshakes": 256,
    # A real node runs one handshake at a time; 16 leaves room for a site's
    # NAT. Beyond it the oldest from that address is evicted, so a flood from
    # one address cannot lock out a real node behind the same address.
    "max_handshakes_per_host": 16,
    # New handshakes per second per address (token bucket): each costs ~0.3 ms
    # of proxy CPU, so one address gets at most ~1.5% of a core; a burst of
    # 100 lets a whole site behind one NAT reconnect after a power cut.
    "handshake_rate": 50,
    "handshake_burst": 100,
    # BLE connections at once: a controller holds a handful (the Pi's
    # CYW43455 is specified for about 7 LE links); each costs a BleLink
    # (shared_protocol/ble/link.py: ~10 KB at most) and a pump task.
    "max_ble_links": 7,
    # A BLE connection that delivered no whole message for this long is
    # dropped (a board pings its proxy every 10 s): a peer that connects
    # and never writes does not hold a slot.
    "ble_idle_s": 60,
}


class Config:
    def __init__(self):
        self.data = "./upsycle-data"
        self.listen = "127.0.0.1"
        self.tcp_port = DEFAULT_PORT
        self.udp_port = DEFAULT_PORT
        self.status_from = ["127.0.0.1", "::1"]
        self.retention = Retention()
        self.limits = dict(DEFAULT_LIMITS)
        # Secure (Noise XX) links are the default; plaintext sessions only
        # when asked for (loopback tests, benchmarks): docs/proxy.md.
        self.allow_plaintext = False
        # Federation (docs/federation.md). "listed" by default: a peer
        # stores and forwards what its link brings, on our disk and links,
        # so a proxy reachable from the internet must not take every proxy
        # that dials it; a community server that wants any site opts in.
        self.peers = []
        self.peer_policy = "listed"
        self.advertise = None          # (host, port) or None: the listen address
        self.overlay_period_s = 5.0
        self.catchup_period_s = 10.0
        self.fanout = 2
        self.blip_epsilon = 0.0
        self.lan_discovery = ""
        # Bluetooth LE (upsycle/ble/central.py): off unless asked for.
        self.ble = False
        self.ble_medium = ""
        self.ble_group = "default"
        # The asyncio event loop (upsycle/proxy/event_loop.py): uvloop when
        # it is installed, the standard one otherwise.
        self.event_loop = "auto"

    def check(self):
        """Raise ConfigError for limits that would let one address lock out the
        others, and for federation settings that cannot work."""
        _check_limits(self.limits)
        from upsycle.proxy.event_loop import LOOP_CHOICES
        if self.event_loop not in LOOP_CHOICES:
            raise ConfigError("event_loop must be one of %s, got %r" % (", ".join(LOOP_CHOICES), self.event_loop))
        if self.peer_policy not in ("listed", "open"):
            raise ConfigError("peer_policy must be \"listed\" or \"open\", got %r" % (self.peer_policy,))
        from upsycle.proxy.peers import parse_peer
        for p in self.peers:
            parse_peer(p)
        if self.lan_discovery:
            import ipaddress
            group, port = parse_hostport(self.lan_discovery)
            try:
                multicast = ipaddress.ip_address(group).is_multicast and port > 0
            except ValueError:
                multicast = False
            if not multicast:
                raise ConfigError("lan_discovery must be an IPv4 multicast GROUP:PORT, e.g. 239.255.77.83:7884; "
                                  "got %r" % (self.lan_discovery,))

    @classmethod
    def load(cls, path=None):
        c = cls()
        if path is None:
            return c
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except OSError as e:
            raise ConfigError("cannot read config %s: %s" % (path, e))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("config %s is not valid TOML: %s" % (path, e))
        # [bridge.*]: the bridges' own sections (upsycle.bridge.config), kept
        # in the same file for one place to configure a site; not the proxy's.
        raw.pop("bridge", None)
        for key in ("data", "listen"):
            if key in raw:
                setattr(c, key, str(raw.pop(key)))
        for key in ("tcp_port", "udp_port"):
            if key in raw:
                setattr(c, key, _int(raw.pop(key), key, -1, 65535))
        if "allow_plaintext" in raw:
            v = raw.pop("allow_plaintext")
            if not isinstance(v, bool):
                raise ConfigError("allow_plaintext must be true or false, got %r" % (v,))
            c.allow_plaintext = v
        if "ble" in raw:
            v = raw.pop("ble")
            if not isinstance(v, bool):
                raise ConfigError("ble must be true or false, got %r" % (v,))
            c.ble = v
        for key in ("ble_medium", "ble_group"):
            if key in raw:
                setattr(c, key, str(raw.pop(key)))
        if "status_from" in raw:
            c.status_from = [str(x) for x in raw.pop("status_from")]
        if "peers" in raw:
            v = raw.pop("peers")
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError("peers must be a list of \"HOST:PORT[@KEY]\" strings")
            c.peers = list(v)
        if "peer_policy" in raw:
            c.peer_policy = str(raw.pop("peer_policy"))
        if "advertise" in raw:
            v = str(raw.pop("advertise"))
            c.advertise = parse_hostport(v) if v else None
        for key in ("overlay_period_s", "catchup_period_s"):
            if key in raw:
                v = raw.pop(key)
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0.05 <= v <= 3600):
                    raise ConfigError("%s must be a number of seconds in 0.05..3600, got %r" % (key, v))
                setattr(c, key, float(v))
        if "fanout" in raw:
            c.fanout = _int(raw.pop("fanout"), "fanout", 2, 8)
        if "blip_epsilon" in raw:
            v = raw.pop("blip_epsilon")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 <= v <= 64):
                raise ConfigError("blip_epsilon must be a number in 0..64, got %r" % (v,))
            c.blip_epsilon = float(v)
        if "event_loop" in raw:
            c.event_loop = str(raw.pop("event_loop"))
        if "lan_discovery" in raw:
            c.lan_discovery = str(raw.pop("lan_discovery"))
        ret = raw.pop("retention", {})
        for key in ("max_count", "max_age_s", "max_bytes"):
            if key in ret:
                setattr(c.retention, key, _int(ret.pop(key), "retention." + key, 0, 1 << 62))
        lim = raw.pop("limits", {})
        for key in list(lim):
            if key not in DEFAULT_LIMITS:
                raise ConfigError("unknown setting limits.%s in %s" % (key, path))
            c.limits[key] = _int(lim.pop(key), "limits." + key, 0, 1 << 62)
        c.check()
        unknown = sorted(list(raw) + ["retention." + k for k in ret])
        if unknown:
            raise ConfigError("unknown setting(s) in %s: %s" % (path, ", ".join(unknown)))
        return c


def _check_limits(limits):
    for per, total in (("max_connections_per_host", "max_connections"), ("max_sessions_per_host", "max_sessions")):
        if limits[per] >= limits[total]:
            raise ConfigError("limits.%s (%d) must be less than limits.%s (%d): one address must leave room "
                              "for the others" % (per, limits[per], total, limits[total]))


def _int(v, key, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool) or not (lo <= v <= hi):
        raise ConfigError("%s must be an integer in %d..%d, got %r" % (key, lo, hi, v))
    return v


def parse_hostport(s, default_port=DEFAULT_PORT):
    """"HOST:PORT", "[v6]:PORT", "HOST" or ":PORT" -> (host, port)."""
    s = s.strip()
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, port = s.split(":")
    else:
        host, port = s, ""
    host = host or "127.0.0.1"
    try:
        p = int(port) if port else default_port
    except ValueError:
        raise ConfigError("bad port in %r" % s)
    if not (0 <= p <= 65535):
        raise ConfigError("port out of range in %r" % s)
    return host, p
