"""`upsycle proxy`: run the store-and-forward proxy; `upsycle proxy status`."""
import asyncio
import gc
import json
import logging
import signal
import sys

log = logging.getLogger("upsycle.proxy")


def register(sub):
    p = sub.add_parser("proxy", help="run the store-and-forward proxy (or: proxy status)",
                       description="Keep messages for edge nodes while they sleep or roam; "
                                   "`upsycle proxy status` asks a running proxy for its counters.")
    p.add_argument("action", nargs="?", choices=["run", "status", "peers"], default="run")
    p.add_argument("--config", help="TOML configuration file (flags override it)")
    p.add_argument("--data", help="data directory (default ./upsycle-data)")
    p.add_argument("--listen", help="HOST:PORT for TCP and UDP (default 127.0.0.1:7883)")
    p.add_argument("--tcp-port", type=int, help="TCP port (0: any free port)")
    p.add_argument("--udp-port", type=int, help="UDP port (-1: no UDP)")
    p.add_argument("--max-db-bytes", type=int, help="storage quota for the database (0: none)")
    p.add_argument("--insecure", action="store_true",
                   help="also accept plaintext sessions (allow_plaintext = true); secure Noise links "
                        "stay available. For loopback tests and benchmarks only")
    p.add_argument("--peer", action="append", default=[], metavar="HOST:PORT[@KEY]",
                   help="another proxy to link with (repeatable; KEY: its public key, 64 hex digits); "
                        "added to the config's peers")
    p.add_argument("--peer-policy", choices=["listed", "open"],
                   help="listed (default): link only with the listed peers; open: with any proxy")
    p.add_argument("--advertise", help="HOST:PORT other proxies reach this one at")
    p.add_argument("--overlay-period", type=float, help="gossip period in seconds (default 5)")
    p.add_argument("--catchup-period", type=float, help="catch-up summaries period in seconds (default 10)")
    p.add_argument("--lan-discovery", metavar="GROUP:PORT",
                   help="announce this proxy and hear others on the LAN (multicast group, e.g. 239.255.77.83:7884)")
    p.add_argument("--blip", type=float, metavar="EPSILON",
                   help="randomise the subscription filters sent to peers with BLIP (epsilon; default: exact)")
    p.add_argument("--ble", action="store_true",
                   help="also serve boards over Bluetooth LE: scan, connect (bleak, BlueZ) and run each "
                        "board's session as over UDP (needs the 'ble' extra)")
    p.add_argument("--ble-medium", metavar="HOST:PORT",
                   help="with --ble: use the virtual BLE medium (`upsycle ble medium`) instead of BlueZ")
    p.add_argument("--ble-group", metavar="NAME", help="with --ble-medium: the proxy's range group")
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"],
                   help="event loop: auto (default: uvloop where installed, else asyncio's), uvloop or asyncio")
    p.add_argument("--proxy", default="127.0.0.1:7883", help="for status and peers: the proxy's HOST:PORT")
    p.add_argument("--json", action="store_true", help="for status: print JSON")
    p.set_defaults(func=run)


def build_config(args):
    from upsycle.proxy.config import Config, parse_hostport
    c = Config.load(args.config)
    if args.data:
        c.data = args.data
    if args.listen:
        host, port = parse_hostport(args.listen)
        c.listen, c.tcp_port, c.udp_port = host, port, port
    if args.tcp_port is not None:
        c.tcp_port = args.tcp_port
    if args.udp_port is not None:
        c.udp_port = args.udp_port
    if args.insecure:
        c.allow_plaintext = True
    if args.ble:
        c.ble = True
    if args.ble_medium:
        c.ble_medium = args.ble_medium
    if args.ble_group:
        c.ble_group = args.ble_group
    if args.max_db_bytes is not None:
        c.limits["max_db_bytes"] = args.max_db_bytes
    c.peers = c.peers + list(args.peer)
    if args.peer_policy:
        c.peer_policy = args.peer_policy
    if args.advertise:
        c.advertise = parse_hostport(args.advertise)
    if args.overlay_period is not None:
        c.overlay_period_s = args.overlay_period
    if args.catchup_period is not None:
        c.catchup_period_s = args.catchup_period
    if args.lan_discovery:
        c.lan_discovery = args.lan_discovery
    if args.blip is not None:
        c.blip_epsilon = args.blip
    if args.loop:
        c.event_loop = args.loop
    c.check()
    return c


def run(args):
    from upsycle.proxy import event_loop
    from upsycle.proxy.config import ConfigError
    if args.action == "status":
        return status(args)
    if args.action == "peers":
        return peers(args)
    try:
        config = build_config(args)
        factory, _, why = event_loop.choose(config.event_loop)
    except (ConfigError, event_loop.EventLoopError) as e:
        print("upsycle proxy: %s" % e, file=sys.stderr)
        return 2
    return event_loop.run(_serve(config, why), factory)


def _start_failure(e, config):
    """(log code, what the operator reads) for a failed start, or None when
    the error is not one a start can meet (a bug: let it raise)."""
    from upsycle.identity import IdentityError
    from upsycle.proxy.server import BleUnavailable
    if isinstance(e, IdentityError):
        return "identity", "cannot load the proxy key: %s" % e
    if isinstance(e, ImportError):
        if (e.name or "").split(".")[0] != "bleak":
            return None
        return "", "--ble needs bleak: pip install 'upsycle[ble]'"
    if isinstance(e, BleUnavailable):
        return "ble", "cannot start: %s" % e
    return "listen", "cannot listen on %s: %s" % (config.listen, e)


async def _serve(config, loop_why=""):
    from upsycle.proxy.event_loop import name_of
    from upsycle.proxy.server import BleUnavailable, Proxy, StorageError
    from upsycle.identity import IdentityError
    # Once per start: the loop running, and why it is not uvloop if it is not
    # (not installed on this platform, or asked for).
    running = name_of(asyncio.get_running_loop())
    if loop_why:
        log.info("event=event_loop loop=%s detail=\"%s\"", running, loop_why.replace('"', "'"))
    else:
        log.info("event=event_loop loop=%s", running)
    proxy = Proxy(config)
    # Handlers go in before start() opens the port: a SIGTERM that arrives
    # as soon as the port answers must still end in a clean shutdown (exit 0,
    # store closed), not in the default action.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await proxy.start()
    except StorageError as e:
        log.error("event=start_failed code=%s %s", e.code, e.message)
        print("upsycle proxy: cannot start: %s" % e.message, file=sys.stderr)
        return 3
    except (IdentityError, ImportError, BleUnavailable, OSError) as e:
        said = _start_failure(e, config)
        if said is None:
            raise
        code, text = said
        if code:
            log.error("event=start_failed code=%s %s", code, e)
        print("upsycle proxy: %s" % text, file=sys.stderr)
        proxy.store.close()
        return 3
    # What start-up made (modules, classes, the store's topic table) lives
    # as long as the process: the cyclic collector's full passes, whose cost
    # grows with everything tracked, skip it from here on (gc.freeze; the
    # sessions' objects are still collected as usual).
    gc.collect()
    gc.freeze()
    await stop.wait()
    log.info("event=shutdown_requested")
    await proxy.stop()
    return 0


def _fetch(args):
    from upsycle.proxy.config import parse_hostport
    from upsycle.proxy.status import fetch_status
    host, port = parse_hostport(args.proxy)
    try:
        return asyncio.run(fetch_status(host, port))
    except (OSError, asyncio.TimeoutError, RuntimeError) as e:
        print("upsycle proxy %s: no answer from %s:%d: %s" % (args.action, host, port, e or "timeout"),
              file=sys.stderr)
        return None


def status(args):
    st = _fetch(args)
    if st is None:
        return 1
    if args.json:
        print(json.dumps(st, sort_keys=True, indent=2))
        return 0
    fed = st.pop("federation", None)
    for k in sorted(st):
        v = st[k]
        if isinstance(v, dict):
            print("%-20s %s" % (k, ", ".join("%s=%s" % kv for kv in sorted(v.items())) or "none"))
        else:
            print("%-20s %s" % (k, v))
    if fed:
        print("federation")
        for k in ("overlay_id", "peer_policy", "peer_links", "topics_carried", "queued", "reorder_waiting",
                  "cyclon_view", "vicinity_view"):
            print("  %-18s %s" % (k, fed.get(k)))
        print("  %-18s %s" % ("counters", ", ".join("%s=%s" % kv for kv in sorted(fed.get("counters", {}).items()))
                                 or "none"))
        for topic, (succ, pred) in sorted(fed.get("rings", {}).items()):
            print("  topic %s  successors %s  predecessors %s" % (topic, ",".join(succ) or "-", ",".join(pred) or "-"))
        _print_peers(fed.get("peers", []), "  ")
    return 0


def _print_peers(rows, indent=""):
    print("%s%-16s %-22s %-5s %7s %8s %8s %10s %10s %10s" % (indent, "peer", "address", "links", "queued",
                                                          "inflight", "sent", "retransmit", "tx_bytes", "rx_bytes"))
    for r in rows:
        print("%s%-16s %-22s %-5s %7d %8d %8d %10d %10d %10d" % (
            indent, r["id"], r["addr"], r["links"] or "-", r["queued"], r["in_flight"], r["sent"],
            r["retransmits"], r["tx_bytes"], r["rx_bytes"]))


def peers(args):
    st = _fetch(args)
    if st is None:
        return 1
    rows = (st.get("federation") or {}).get("peers", [])
    if args.json:
        print(json.dumps(rows, sort_keys=True, indent=2))
    else:
        _print_peers(rows)
    return 0
