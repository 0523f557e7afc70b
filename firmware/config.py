"""The node's configuration: /config.json, written by `upsycle flash`.

Parsing never trusts the file: it may be missing, cut short by a power loss
during a copy, edited by hand, or written for another board. Every problem is
a ConfigError whose message says what to do; the caller (firmware.node) then
enters safe mode instead of rebooting.

Format 1, a JSON object:
  format              1
  board               a name from KNOWN_BOARDS; must match this firmware's sys.platform
  node_key            64 hex digits: the Ed25519 private seed of this node
  node_id             64 hex digits: its public key (computed on the host)
  wifi                list of {"ssid": str, "password": str}
  proxies             list of "host:port" or "host:port@PROXYKEYHEX" (pinned key);
                      with transport "ble" also "ble" or "ble@PROXYKEYHEX": the proxy
                      that connects over Bluetooth LE (its key pinned or not)
  proxy_mode          optional: "failover" (default: one proxy at a time, the next
                      when it stops answering) or "all" (publish through every
                      proxy of the list; firmware/proxy_all.py); "all" not over BLE
  transport           optional: "wifi" (default), "ble" (no WiFi: peers and the
                      proxy over Bluetooth LE) or "wifi+ble" (proxy over WiFi,
                      peers over both); "ble" needs the Noise link
  topics              list of opaque invite strings
  publish_interval_s  seconds between sensor readings
  led, sensor         copied from the board profile (host/upsycle/profiles/<board>.json)
  link                optional: "plaintext" (a proxy run with --insecure)
  lan                 optional: {"port": 1..65535, "peers": ["host:port", ...]}
  sleep               optional: {"awake_s": 1..86400, "sleep_s": 1..86400}
  app                 optional: {"readings": 0..READINGS_MAX} (the example app)
  batch               optional: {"readings": 1..groups.wire.BATCH_MAX} (readings per signature)
  replica             optional: {"log_keep": 1..dmc.crdts.LOG_MAX} (readings kept per log;
                      firmware/topic.py LOG_KEEP when unset)

Every section is checked here, so `upsycle flash` (which runs this parser
on the host) refuses a bad config before it writes anything, and the
runtime trusts what it reads.
"""
import json

from shared_protocol.errors import RemoteError

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

CONFIG_PATH = "/config.json"
_FORMAT = const(1)

# A config is a few hundred bytes; refusing anything larger bounds the RAM a
# corrupt or hostile file can take when parsed.
CONFIG_MAX_BYTES = 4096
# WPA2: SSIDs are at most 32 bytes, passphrases 8..63 characters (or empty
# for an open network).
_SSID_MAX = const(32)
_WIFI_KEY_MIN = const(8)
_WIFI_KEY_MAX = const(63)
# How many networks/proxies/topics a node keeps: each costs RAM on every
# reconnect attempt or subscription, and a sensor node needs few.
WIFI_MAX = 4
PROXIES_MAX = 4
TOPICS_MAX = 8
# An invite (URL or QR payload) is short; 512 characters leaves room.
TOPIC_MAX_CHARS = 512
_HOST_MAX_CHARS = const(253)  # DNS name limit (RFC 1035)
_PROXY_KEY_HEX = const(64)    # an X25519 public key, hex
# Publishing more often than once a second floods the edge network; less
# often than daily is not a sensor.
_INTERVAL_MIN_S = const(1)
INTERVAL_MAX_S = 86400
# LAN peers a node announces to: each is a datagram every few seconds.
LAN_PEERS_MAX = 8
# A deep-sleep phase or wake of more than a day is a misconfiguration.
SLEEP_MAX_S = 86400
# Upper bound of the example app's reading count (bounded like every value).
_READINGS_MAX = const(100000)

# How a node with several proxies uses them (docs/federation.md).
_PROXY_MODES = const(("failover", "all"))

# Radios a node may use (firmware/ble_link.py for the BLE part).
_TRANSPORTS = const(("wifi", "ble", "wifi+ble"))
# The proxy entry of a BLE proxy link: the proxy is whichever central
# speaks Noise to the node over its GATT service.
_BLE_PROXY = const("ble")

# Boards this firmware knows, with the sys.platform each one reports.
KNOWN_BOARDS = {
    "esp32": "esp32",
    "esp32s3": "esp32",
    "esp32c3": "esp32",
    "pico_w": "rp2",
    "pico2_w": "rp2",
    "virtual": "webassembly",
    "unix": "linux",   # MicroPython's unix port: a development instrument (firmware/unix.py)
}


class ConfigError(RemoteError):
    """/config.json is missing, corrupt or not for this board."""


def _fail(code, message):
    raise ConfigError("config." + code, message)


def _is_hex(s, n):
    # bytes.fromhex, not a loop over the characters: MicroPython interns
    # each character it takes out of a str, a name for good (docs/node.md,
    # "Names a `.mpy` node interns"). Whitespace, which fromhex skips, leaves
    # fewer bytes than n // 2.
    if not isinstance(s, str) or len(s) != n or s != s.lower():
        return False
    try:
        return len(bytes.fromhex(s)) == n // 2
    except ValueError:
        return False


def split_proxy_key(entry):
    """"host:port" or "host:port@KEY" (KEY: the proxy's X25519 public key,
    64 hex digits, as `upsycle proxy` prints it) -> (address, key bytes or None).

    A pinned key makes the Noise handshake fail against any other proxy;
    without one the node accepts the key it meets (trust on first use).
    """
    addr, at, key = entry.partition("@")
    if not at:
        return entry, None
    if not _is_hex(key.lower(), _PROXY_KEY_HEX):
        return addr, None
    return addr, bytes.fromhex(key)


def _list_of(cfg, key, limit):
    v = cfg.get(key, [])
    if not isinstance(v, list):
        _fail("type", "'%s' must be a list" % key)
    if len(v) > limit:
        _fail("limit", "'%s' has %d entries, at most %d are allowed" % (key, len(v), limit))
    return v


def parse(data, platform):
    """Validate config bytes for a board reporting sys.platform == platform.

    Returns the config dict; raises ConfigError.
    """
    if len(data) > CONFIG_MAX_BYTES:
        _fail("too_large", "%s is %d bytes, larger than %d: rewrite it with `upsycle flash`"
              % (CONFIG_PATH, len(data), CONFIG_MAX_BYTES))
    try:
        cfg = json.loads(data)
    except ValueError:
        _fail("corrupt", "%s is not valid JSON (cut short by a power loss?): "
              "rewrite it with `upsycle flash`" % CONFIG_PATH)
    if not isinstance(cfg, dict):
        _fail("corrupt", "%s must hold a JSON object" % CONFIG_PATH)
    if cfg.get("format") != _FORMAT:
        _fail("format", "config format %r, this firmware reads format %d: flash matching firmware"
              % (cfg.get("format"), _FORMAT))
    board = cfg.get("board")
    if board not in KNOWN_BOARDS:
        _fail("unknown_board", "unknown board %r; known boards: %s"
              % (board, ", ".join(sorted(KNOWN_BOARDS))))
    if KNOWN_BOARDS[board] != platform:
        _fail("wrong_board", "config is for board %r (%s) but this is a %s board: "
              "flash with the right --board" % (board, KNOWN_BOARDS[board], platform))
    if not _is_hex(cfg.get("node_key"), 64):
        _fail("node_key", "'node_key' must be 64 lowercase hex digits (an Ed25519 seed)")
    if not _is_hex(cfg.get("node_id"), 64):
        _fail("node_id", "'node_id' must be 64 lowercase hex digits (an Ed25519 public key)")
    for w in _list_of(cfg, "wifi", WIFI_MAX):
        if not isinstance(w, dict) or not isinstance(w.get("ssid"), str) or not isinstance(w.get("password", ""), str):
            _fail("wifi", "each 'wifi' entry must be {\"ssid\": ..., \"password\": ...}")
        n = len(w["ssid"].encode())
        if n < 1 or n > _SSID_MAX:
            _fail("wifi", "SSID %r must be 1..%d bytes" % (w["ssid"], _SSID_MAX))
        k = len(w.get("password", ""))
        if k and (k < _WIFI_KEY_MIN or k > _WIFI_KEY_MAX):
            _fail("wifi", "WiFi password for %r must be %d..%d characters or empty"
                  % (w["ssid"], _WIFI_KEY_MIN, _WIFI_KEY_MAX))
    transport = cfg.get("transport", "wifi")
    if transport not in _TRANSPORTS:
        _fail("transport", "'transport' must be one of %s, not %r" % (", ".join(_TRANSPORTS), transport))
    if transport == "ble" and cfg.get("link", "noise") != "noise":
        _fail("transport", "a proxy link over BLE is always secure: drop 'link' or set it to \"noise\"")
    for p in _list_of(cfg, "proxies", PROXIES_MAX):
        if isinstance(p, str) and p.partition("@")[0] == _BLE_PROXY:
            if transport != "ble":
                _fail("proxy", "proxy %r is reached over BLE: set \"transport\": \"ble\"" % (p,))
            if "@" in p and split_proxy_key(p)[1] is None:
                _fail("proxy", "proxy %r: the part after @ must be the proxy's public key, 64 hex digits" % (p,))
            continue
        if transport == "ble":
            _fail("proxy", "proxy %r: with \"transport\": \"ble\" the proxy is \"ble\" or \"ble@KEY\"" % (p,))
        if not isinstance(p, str) or ":" not in p:
            _fail("proxy", "proxy %r must be \"host:port\"" % (p,))
        addr, key = split_proxy_key(p)
        if key is None and "@" in p:
            _fail("proxy", "proxy %r: the part after @ must be the proxy's public key, 64 hex digits" % (p,))
        host, _, port = addr.rpartition(":")
        if not host or len(host) > _HOST_MAX_CHARS or not port.isdigit() or not 0 < int(port) < 65536:
            _fail("proxy", "proxy %r must be \"host:port\" with a port 1..65535" % (p,))
    mode = cfg.get("proxy_mode", "failover")
    if mode not in _PROXY_MODES:
        _fail("proxy_mode", "'proxy_mode' must be one of %s, not %r" % (", ".join(_PROXY_MODES), mode))
    if mode == "all" and transport == "ble":
        _fail("proxy_mode", "'proxy_mode' \"all\" needs proxies over WiFi (a BLE node has one proxy)")
    for t in _list_of(cfg, "topics", TOPICS_MAX):
        if not isinstance(t, str) or not 0 < len(t) <= TOPIC_MAX_CHARS:
            _fail("topic", "each topic invite must be a string of 1..%d characters" % TOPIC_MAX_CHARS)
    iv = cfg.get("publish_interval_s", 60)
    if not isinstance(iv, int) or not _INTERVAL_MIN_S <= iv <= INTERVAL_MAX_S:
        _fail("interval", "'publish_interval_s' must be an integer %d..%d"
              % (_INTERVAL_MIN_S, INTERVAL_MAX_S))
    cfg["publish_interval_s"] = iv
    if cfg.get("link", "noise") not in ("noise", "plaintext"):
        _fail("link", "'link' must be \"noise\" or \"plaintext\"")
    lan = cfg.get("lan")
    if lan is not None:
        if not isinstance(lan, dict) or not _port_ok(lan.get("port")):
            _fail("lan", "'lan' must be {\"port\": 1..65535, \"peers\": [\"host:port\", ...]}")
        for p in _list_of(lan, "peers", LAN_PEERS_MAX):
            host, _, port = p.rpartition(":") if isinstance(p, str) else ("", "", "")
            if not host or len(host) > _HOST_MAX_CHARS or not port.isdigit() or not _port_ok(int(port)):
                _fail("lan", "LAN peer %r must be \"host:port\" with a port 1..65535" % (p,))
    sl = cfg.get("sleep")
    if sl is not None:
        if not isinstance(sl, dict) or not _int_in(sl.get("awake_s"), 1, SLEEP_MAX_S) \
                or not _int_in(sl.get("sleep_s"), 1, SLEEP_MAX_S):
            _fail("sleep", "'sleep' must be {\"awake_s\": 1..%d, \"sleep_s\": 1..%d}" % (SLEEP_MAX_S, SLEEP_MAX_S))
    batch = cfg.get("batch")
    if batch is not None:
        from shared_protocol.groups.wire import BATCH_MAX
        if not isinstance(batch, dict) or not _int_in(batch.get("readings"), 1, BATCH_MAX):
            _fail("batch", "'batch' must be {\"readings\": 1..%d}" % BATCH_MAX)
    rep = cfg.get("replica")
    if rep is not None:
        from shared_protocol.dmc.crdts import LOG_MAX
        if not isinstance(rep, dict) or not _int_in(rep.get("log_keep"), 1, LOG_MAX):
            _fail("replica", "'replica' must be {\"log_keep\": 1..%d}" % LOG_MAX)
    app = cfg.get("app")
    if app is not None:
        if not isinstance(app, dict) or not _int_in(app.get("readings", 0), 0, _READINGS_MAX):
            _fail("app", "'app' must be {\"readings\": 0..%d}" % _READINGS_MAX)
    return cfg


def _int_in(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _port_ok(p):
    return _int_in(p, 1, 65535)


def load(platform, path=CONFIG_PATH):
    try:
        with open(path, "rb") as f:
            data = f.read(CONFIG_MAX_BYTES + 1)
    except OSError:
        _fail("missing", "%s not found: flash this board with `upsycle flash --config ...`" % path)
    return parse(data, platform)
