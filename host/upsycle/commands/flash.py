"""`upsycle flash`: put the node firmware and its config on a board.

    upsycle flash --board pico_w [--port PORT] --config node.toml
    upsycle flash --board virtual --port socket://127.0.0.1:PORT --wifi SSID:PASS --invite URL

See upsycle.flashing for the steps and the layout on the board.
"""
import sys

from upsycle import boards, flashing


def register(sub):
    p = sub.add_parser("flash", help="flash the node firmware and config to a board over mpremote")
    p.add_argument("--board", required=True, help="board profile: one of " + ", ".join(boards.names()))
    p.add_argument("--port", help="serial port, or socket://127.0.0.1:PORT for a virtual board "
                                  "(default: the first USB board)")
    p.add_argument("--config", help="node.toml: node_key, wifi, proxies, topics, publish_interval_s")
    p.add_argument("--wifi", action="append", default=[], metavar="SSID:PASS", help="a WiFi network (repeatable)")
    p.add_argument("--proxy", action="append", default=[], metavar="HOST:PORT", help="a proxy HOST:PORT, or HOST:PORT@KEY to pin its public key as `upsycle proxy` prints it (repeatable)")
    p.add_argument("--proxy-mode", metavar="MODE", help="with several --proxy: failover (default: one at a time) "
                                                        "or all (publish through every one)")
    p.add_argument("--invite", action="append", default=[], metavar="INVITE", help="a topic invite (repeatable)")
    p.add_argument("--interval", type=int, help="seconds between sensor readings")
    p.add_argument("--build-dir", default=flashing.DEFAULT_BUILD_DIR, help="where compiled .mpy files are cached (default: "
                   "$XDG_CACHE_HOME/upsycle/build, private to you)")
    p.add_argument("--no-tail", action="store_true", help="do not reset the board and show its first lines")
    p.set_defaults(func=run)


def run(args):
    def out(line):
        print(line, flush=True)
    try:
        profile = boards.load(args.board)
        base = flashing.read_toml(args.config) if args.config else {}
        cfg = flashing.make_config(profile, base, wifi=args.wifi, proxies=args.proxy,
                                   invites=args.invite, interval=args.interval,
                                   proxy_mode=args.proxy_mode)
        flashing.flash(args.port, profile, cfg, out=out, build_dir=args.build_dir, tail=not args.no_tail)
    except (boards.BoardError, flashing.FlashError) as e:
        print("upsycle flash: " + str(e), file=sys.stderr)
        return 1
    return 0
