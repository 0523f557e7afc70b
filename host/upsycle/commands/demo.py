"""`upsycle demo`: the field demo (upsycle.field_demo), the README's main command.

A proxy, three virtual boards flashed with `upsycle flash`, a private topic,
readings sealed end to end, one board losing power and catching up through
the proxy, a host subscriber printing the merged replica, and a summary.
`upsycle demo --wire` runs the older check instead: a reading's bytes
travel CPython -> MicroPython VM -> CPython unchanged.
"""
import time

from shared_protocol.wire import cbor, envelope, framing


def register(sub):
    p = sub.add_parser("demo", help="run the field demo: proxy, three virtual boards, an outage")
    p.add_argument("--readings", type=int, default=8, help="readings per board (default 8)")
    p.add_argument("--interval", type=int, default=1, help="seconds between readings (default 1)")
    p.add_argument("--offline", type=int, default=8, help="seconds node3 stays without power (default 8)")
    p.add_argument("--keep", metavar="DIR", help="keep the boards' flash and the proxy data in DIR")
    p.add_argument("--sites", type=int, choices=[1, 2, 3], default=1,
                   help="2: the subscriber at a second site behind its own proxy, the link between the "
                        "sites cut while node3 is off; 3: a \"home\" proxy between the two sites, the link "
                        "between site A and home cut (docs/federation.md)")
    p.add_argument("--wire", action="store_true", help="only the wire-format round trip through the VM")
    p.set_defaults(func=run)


def run(args):
    if args.wire:
        return run_wire(args)
    from upsycle import field_demo
    print("upsycle field demo: a proxy, three virtual boards, a private topic, an outage")
    if args.sites == 2:
        print("  ... at two sites: the subscriber behind a second proxy, the link between the sites cut and "
              "restored")
    if args.sites == 3:
        print("  ... at two sites and home: site A -> home -> site B, the link between site A and home cut "
              "and restored")
    s = field_demo.run(readings=args.readings, interval=args.interval, offline_s=args.offline,
                       keep=args.keep, sites=args.sites)
    try:
        print()
        print("summary")
        print("  boards                 %d (%d readings each, every %d s)" % (
            s.get("boards", 0), args.readings, args.interval))
        print("  readings published     %s" % s.get("published"))
        print("  delivered everywhere   %s (in the subscriber and in every board's replica on flash)"
              % s.get("delivered"))
        print("  lost                   %s" % s.get("lost"))
        print("  replicas identical     %s" % ("yes" if s.get("converged") else "NO"))
        print("  convergence time       %s s after node3 came back%s" % (
            s.get("convergence_s"), " and the sites were linked again" if s.get("sites", 1) > 1 else ""))
        if s.get("sites") == 2:
            print("  sites                  2 (lost across sites: %s)" % s.get("lost"))
        if s.get("sites") == 3:
            print("  sites                  A -> home -> B (lost at site B: %s, at home: %s)" % (
                s.get("lost"), s.get("lost_home")))
        print("  total time             %s s" % s.get("elapsed_s"))
        print("demo %s" % ("OK" if s["ok"] else "FAILED"))
    finally:
        if s.get("cleanup"):
            s["cleanup"]()
    return 0 if s["ok"] else 1


# A demo-only message type in the application block, in a registry of its own
# so that importing the CLI never adds a type to the node's shared registry.
DEMO = envelope.Registry()
READING = DEMO.register(200, "demo_reading", (
    ("topic", envelope.BYTES, 16),
    ("msg_id", envelope.UINT, 0xFFFFFFFF),
    ("ts_ms", envelope.UINT, None),
    ("value", envelope.FLOAT, None),
    ("key", envelope.TEXT, 16),
))

_VM_SIDE = """
import sys, binascii
from shared_protocol.wire import envelope, framing
DEMO = envelope.Registry()
DEMO.register(200, "demo_reading", (
    ("topic", envelope.BYTES, 16), ("msg_id", envelope.UINT, 0xFFFFFFFF),
    ("ts_ms", envelope.UINT, None), ("value", envelope.FLOAT, None), ("key", envelope.TEXT, 16)))
stream = binascii.unhexlify(sys.argv[0])
dec = framing.StreamDecoder()
out = []
for f in dec.feed(stream):
    m = DEMO.decode(f)
    print("  micropython decoded %s topic=%s value=%r key=%s" % (m.name, binascii.hexlify(m["topic"]).decode(), m["value"], m["key"]))
    out.append(binascii.hexlify(framing.frame(DEMO.encode_message(m))).decode())
print("VM-BYTES " + "".join(out))
"""


def run_wire(args):
    from upsycle import vm

    topic = bytes(range(16))
    readings = [(1, 21.5, "temp"), (2, 48.25, "hum"), (3, -3.0625, "temp")]
    stream = bytearray()
    t0 = int(time.time() * 1000)
    for mid, value, key in readings:
        msg = DEMO.encode("demo_reading", topic, mid, t0 + mid, value, key)
        print("cpython encoded reading %d: %d bytes %s" % (mid, len(msg), msg.hex()))
        stream += framing.frame(msg)
    proc = vm.run([_VM_SIDE], args=[bytes(stream).hex()], timeout=120)
    print(proc.stdout.rstrip())
    if proc.returncode != 0:
        print(proc.stderr)
        print("demo FAILED: the MicroPython VM exited %d" % proc.returncode)
        return 1
    vm_hex = [l for l in proc.stdout.splitlines() if l.startswith("VM-BYTES ")][0][9:]
    same = vm_hex == bytes(stream).hex()
    back = [DEMO.decode(f) for f in framing.StreamDecoder().feed(bytes.fromhex(vm_hex))]
    print("round trip CPython -> MicroPython -> CPython: %s (%d messages, %d bytes)" % (
        "identical bytes" if same else "MISMATCH", len(back), len(stream)))
    print("cbor2 agrees: %s" % _cbor2_agrees(readings, topic, t0))
    return 0 if same else 1


def _cbor2_agrees(readings, topic, t0):
    import cbor2
    for mid, value, key in readings:
        ours = DEMO.encode("demo_reading", topic, mid, t0 + mid, value, key)
        theirs = cbor2.dumps([envelope.VERSION, READING[0], topic, mid, t0 + mid, value, key], canonical=True)
        if ours != theirs:
            return False
    return cbor.decode(theirs) == cbor2.loads(theirs)
