"""`upsycle bridge mqtt`: a site's private topics on an MQTT broker, with
Home Assistant discovery (docs/mqtt-bridge.md)."""
import asyncio
import logging
import signal
import sys

log = logging.getLogger("upsycle.bridge")


def register(sub):
    p = sub.add_parser("bridge", help="bridge private topics to other systems (bridge mqtt)")
    bsub = p.add_subparsers(dest="bridge_kind", metavar="KIND")
    m = bsub.add_parser("mqtt", help="publish topics' readings to an MQTT broker (Home Assistant discovery); "
                                     "write MQTT set commands into the topics",
                        description="A member of the topics it bridges (join them with `upsycle topic join "
                                    "URL --home HOME`): subscribes through the proxy, opens each publication "
                                    "and publishes every reading to the broker, retained, QoS 1.")
    m.add_argument("--config", help="TOML file with a [bridge.mqtt] section (flags override it)")
    m.add_argument("--home", help="the bridge's node key, joined topics and state (default $UPSYCLE_HOME "
                                  "or ~/.upsycle)")
    m.add_argument("--proxy", help="the proxy's HOST:PORT (default 127.0.0.1:7883)")
    m.add_argument("--proxy-key", metavar="HEX", help="pin the proxy's public key (64 hex digits)")
    m.add_argument("--udp", action="store_true", help="talk to the proxy over UDP")
    m.add_argument("--insecure", action="store_true", help="plaintext session (a proxy run with --insecure)")
    m.add_argument("--topic", action="append", metavar="NAME",
                   help="a topic to bridge (repeat; default: every topic joined in HOME)")
    m.add_argument("--as", dest="level", action="append", metavar="NAME=LEVEL",
                   help="publish topic NAME under the MQTT level LEVEL")
    m.add_argument("--broker", help="the MQTT broker's HOST:PORT (default 127.0.0.1:1883)")
    m.add_argument("--mqtt-user", dest="username", help="user name at the broker")
    m.add_argument("--mqtt-password-file", dest="password_file",
                   help="file holding the broker password (or set $UPSYCLE_MQTT_PASSWORD)")
    m.add_argument("--prefix", help="topic prefix for readings (default upsycle)")
    m.add_argument("--discovery-prefix", help="Home Assistant discovery prefix (default homeassistant)")
    m.add_argument("--stale-after", type=float,
                   help="seconds without a reading before a node shows unavailable (default 900)")
    m.add_argument("--client-id", help="MQTT client id (default upsycle-bridge-<node id>)")
    m.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run(args):
    try:
        from upsycle.bridge.broker import BrokerRefused
    except ImportError as e:
        print("upsycle bridge mqtt: %s; install the mqtt extra: pip install 'upsycle[mqtt]' "
              "(paho-mqtt 2.x)" % e, file=sys.stderr)
        return 2
    from upsycle.bridge.config import ConfigError, load
    from upsycle.bridge.loop import Bridge, BridgeError
    from upsycle.client import ProxyKeyMismatch, SessionRefused
    from upsycle.topic_store import StoreError
    try:
        cfg = load(args)
        bridge = Bridge(cfg)
    except (ConfigError, BridgeError, StoreError) as e:
        print("upsycle bridge mqtt: %s" % e, file=sys.stderr)
        return 2

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await bridge.run(stop)

    try:
        return asyncio.run(main())
    except BrokerRefused as e:
        print("upsycle bridge mqtt: %s; nothing was taken from the proxy" % e, file=sys.stderr)
        return 1
    except (ProxyKeyMismatch, SessionRefused) as e:
        print("upsycle bridge mqtt: %s" % e, file=sys.stderr)
        return 1
