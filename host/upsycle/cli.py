"""The `upsycle` command line.

Each subcommand lives in its own module under ``upsycle.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
function taking the parsed args and returning an exit code. Modules are found
by listing the package, so adding a command touches no shared file.
"""
import argparse
import importlib
import logging
import pkgutil
import sys

from upsycle import __version__, commands
from upsycle.errors import HostError

# Optional dependencies, by the top-level module a command imports, and the
# extra of pyproject.toml that installs them.
EXTRAS = {"numpy": "sim", "matplotlib": "sim", "bleak": "ble", "paho": "mqtt"}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="upsycle",
        description="Offline-first private publish/subscribe for MicroPython boards and their proxies.",
    )
    parser.add_argument("--version", action="version", version="upsycle " + __version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module("upsycle.commands." + info.name)
        except ImportError as e:
            extra = EXTRAS.get((e.name or "").split(".")[0])
            if extra is None:
                raise
            _needs_extra(sub, info.name, extra)
            continue
        mod.register(sub)
    return parser


def _needs_extra(sub, name, extra):
    """A command whose optional dependencies are not installed: it says how
    to get them instead of taking the whole CLI down."""
    p = sub.add_parser(name, help="(not installed: pip install 'upsycle[%s]')" % extra)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args):
        print("upsycle %s needs the optional '%s' dependencies: pip install 'upsycle[%s]'"
              % (name, extra, extra), file=sys.stderr)
        return 2
    p.set_defaults(func=run)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except HostError as e:
        # Any host error a command did not report itself: one line, no traceback.
        print("upsycle: %s (%s)" % (e.message or e, e.code), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
