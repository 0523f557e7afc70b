"""The bridge's configuration: command-line flags, or a TOML file with the
same keys in a ``[bridge.mqtt]`` section (flags given win over the file).
So one file can hold the proxy's settings and the bridge's side by side
(the proxy reads only its own keys), while the bridge stays its own process:
it is a member of its topics with its own keys, which the proxy must never
hold.

    [bridge.mqtt]
    home = "/var/lib/upsycle/bridge"     # the bridge's node key, topics joined, its state
    proxy = "127.0.0.1:7883"
    proxy_key = "3f1c...e9"              # pin the proxy's key (64 hex digits); else trust on first use
    transport = "tcp"                    # or "udp"
    topics = ["garden"]                  # default: every topic joined in home
    broker = "127.0.0.1:1883"
    username = "upsycle"                 # optional
    password_file = "/etc/upsycle/mqtt-password"   # or $UPSYCLE_MQTT_PASSWORD
    prefix = "upsycle"
    discovery_prefix = "homeassistant"
    stale_after = 900                    # seconds without a reading: the node is unavailable
    [bridge.mqtt.levels]                 # optional: the MQTT level for a topic name
    "jardín #2" = "jardin2"
"""
import os
import tomllib

from upsycle.proxy.config import parse_hostport
from upsycle.topic_store import home_dir

DEFAULTS = {
    "home": None, "proxy": "127.0.0.1:7883", "proxy_key": None, "transport": "tcp", "insecure": False,
    "topics": [], "broker": "127.0.0.1:1883", "username": None, "password_file": None,
    "prefix": "upsycle", "discovery_prefix": "homeassistant", "stale_after": 900, "client_id": None,
    "levels": {},
}
# Availability: longer than any duty cycle a board runs (docs/node.md
# sleep_s), shorter than a day.
STALE_MIN_S = 10
STALE_MAX_S = 86400
MQTT_DEFAULT_PORT = 1883


class ConfigError(Exception):
    code = "bridge_config"


class Config:
    pass


def _prefix_ok(p, what):
    if not p or any(c in p for c in "+#\0") or p.startswith("/") or p.endswith("/"):
        raise ConfigError("%s %r must be a topic prefix without +, # or leading/trailing /" % (what, p))
    return p


def load(args):
    """args: the parsed flags (None for a flag not given)."""
    v = dict(DEFAULTS)
    if args.config:
        try:
            with open(args.config, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError("cannot read %s: %s" % (args.config, e))
        sec = doc.get("bridge", {}).get("mqtt", {})
        unknown = sorted(set(sec) - set(DEFAULTS))
        if unknown:
            raise ConfigError("%s [bridge.mqtt]: unknown key(s) %s" % (args.config, ", ".join(unknown)))
        v.update(sec)
    for k in ("home", "proxy", "proxy_key", "broker", "username", "password_file", "prefix",
              "discovery_prefix", "stale_after", "client_id"):
        x = getattr(args, k, None)
        if x is not None:
            v[k] = x
    if args.udp:
        v["transport"] = "udp"
    if args.insecure:
        v["insecure"] = True
    if args.topic:
        v["topics"] = list(args.topic)
    for item in args.level or ():
        name, sep, level = item.partition("=")
        if not sep:
            raise ConfigError("--as takes NAME=LEVEL")
        v["levels"] = dict(v["levels"], **{name: level})

    c = Config()
    c.home = home_dir(v["home"])
    try:
        c.proxy_host, c.proxy_port = parse_hostport(v["proxy"])
        c.broker_host, c.broker_port = parse_hostport(v["broker"], MQTT_DEFAULT_PORT)
    except Exception as e:
        raise ConfigError(str(e))
    c.proxy_key = None
    if v["proxy_key"]:
        try:
            c.proxy_key = bytes.fromhex(v["proxy_key"])
        except ValueError:
            c.proxy_key = b""
        if len(c.proxy_key) != 32:
            raise ConfigError("proxy_key is the proxy's public key: 64 hex digits")
    if v["transport"] not in ("tcp", "udp"):
        raise ConfigError("transport is tcp or udp")
    c.transport = v["transport"]
    c.secure = not v["insecure"]
    c.topics = list(v["topics"])
    c.username = v["username"]
    c.password = os.environ.get("UPSYCLE_MQTT_PASSWORD")
    if v["password_file"]:
        try:
            with open(v["password_file"]) as f:
                c.password = f.read().strip("\r\n")
        except OSError as e:
            raise ConfigError("cannot read the password file: %s" % e)
    c.prefix = _prefix_ok(v["prefix"], "prefix")
    c.discovery_prefix = _prefix_ok(v["discovery_prefix"], "discovery_prefix")
    s = v["stale_after"]
    if not isinstance(s, (int, float)) or not STALE_MIN_S <= s <= STALE_MAX_S:
        raise ConfigError("stale_after must be %d..%d seconds" % (STALE_MIN_S, STALE_MAX_S))
    c.stale_after = s
    c.client_id = v["client_id"]
    c.levels = {}
    for name, level in dict(v["levels"]).items():
        if not level or any(ch in level for ch in "/+#\0"):
            raise ConfigError("the MQTT level for %r must be one level without /, + or #" % name)
        c.levels[name] = level
    return c
