"""`upsycle demo`: the main job of the README's first command.

For now: a sensor reading travels through the wire format on CPython, then
the same bytes are decoded and re-encoded by the board code running in the
MicroPython VM, and the host checks the VM's bytes match its own.
"""
import time

from shared_protocol import cbor, envelope, framing


def register(sub):
    p = sub.add_parser("demo", help="run the end-to-end demo")
    p.set_defaults(func=run)


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
from shared_protocol import envelope, framing
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


def run(args):
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
        theirs = cbor2.dumps([envelope.VERSION, READING.code, topic, mid, t0 + mid, value, key], canonical=True)
        if ours != theirs:
            return False
    return cbor.decode(theirs) == cbor2.loads(theirs)
