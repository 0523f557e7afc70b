"""`upsycle ble medium`: the virtual BLE radio medium (host/upsycle/ble/medium.py).

    upsycle ble medium --port 0 --mtu 247 --loss 0.02
    upsycle board virtual --fs ./b1 --ble 127.0.0.1:PORT      # a board's radio joins it
    upsycle proxy --ble --ble-medium 127.0.0.1:PORT           # and the proxy's (bleak backend)

Prints ble-medium://127.0.0.1:PORT once it listens; Ctrl-C stops it.
"""


def register(sub):
    p = sub.add_parser("ble", help="Bluetooth LE tools (the virtual radio medium)")
    bs = p.add_subparsers(dest="ble_command", metavar="ACTION")
    m = bs.add_parser("medium", help="run the virtual BLE radio medium that virtual boards and the proxy join")
    from upsycle.ble import medium
    medium.add_arguments(m)
    m.set_defaults(func=medium.run)
    p.set_defaults(func=lambda args: p.print_help() or 2)
