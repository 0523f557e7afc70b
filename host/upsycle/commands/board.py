"""`upsycle board`: boards and the virtual board.

    upsycle board list
    upsycle board virtual --port PORT --fs DIR [--name NAME] [--wifi SSID:PASS] [--ble HOST:PORT]

`board virtual` runs upsycle/vboard/server.mjs in the foreground: a MicroPython
1.27 VM that mpremote drives at socket://127.0.0.1:PORT, with its flash kept
in DIR. Ctrl-C stops it.
"""
import os
import sys

from upsycle import boards, paths, vm

SERVER = os.path.join(paths.VBOARD_DIR, "server.mjs")


def register(sub):
    p = sub.add_parser("board", help="board profiles and the virtual board")
    bsub = p.add_subparsers(dest="board_command", metavar="ACTION")
    lp = bsub.add_parser("list", help="list the board profiles")
    lp.set_defaults(func=run_list)
    vp = bsub.add_parser("virtual", help="run a virtual board (MicroPython VM) behind a loopback TCP port")
    vp.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    vp.add_argument("--fs", required=True, help="host directory holding the board's flash")
    vp.add_argument("--name", default="vboard", help="board name (seeds machine.unique_id)")
    vp.add_argument("--wifi", action="append", default=[], metavar="SSID:PASS",
                    help="a network the virtual WLAN can join (default upsycle-lab:upsycle-lab)")
    vp.add_argument("--echo", action="store_true", help="also print the board's output here")
    vp.add_argument("--ble", metavar="HOST:PORT", help="the virtual BLE medium the board's radio joins "
                    "(`upsycle ble medium`; without it the radio hears nothing)")
    vp.add_argument("--ble-group", metavar="NAME", help="the board's range group on the medium (default: default)")
    vp.set_defaults(func=run_virtual)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_list(args):
    for prof in boards.all_profiles():
        print("%-9s %-12s %-10s %s" % (prof["name"], prof["platform"], prof["mpy_cross_arch"] or "bytecode",
                                        prof["title"]))
    return 0


def server_command(port, fs, name="vboard", wifi=(), echo=False, ble=None, ble_group=None):
    node = vm.check()
    cmd = [node, SERVER, "--vm", vm.vm_module(), "--port", str(port), "--fs", fs, "--name", name]
    for w in wifi:
        cmd += ["--wifi", w]
    if ble:
        cmd += ["--ble", ble]
    if ble_group:
        cmd += ["--ble-group", ble_group]
    if echo:
        cmd.append("--echo")
    return cmd


def run_virtual(args):
    try:
        cmd = server_command(args.port, args.fs, args.name, args.wifi, args.echo, args.ble, args.ble_group)
    except vm.VMUnavailable as e:
        print("upsycle board virtual: %s" % e, file=sys.stderr)
        return 1
    # Become the server: Ctrl-C and kill reach Node directly, which lets the
    # running boot mirror its flash and leaves no process behind.
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
