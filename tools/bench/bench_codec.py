"""Encode+decode of a typical sensor publish message: our codec vs cbor2 on
CPython (ratio in the same run), ours in the MicroPython VM, and the retained
heap of the imported codec + envelope + framing modules in the VM."""
import time

import cbor2

from shared_protocol.wire import cbor, envelope
from table import render
from upsycle import vm

# topic id, message id, timestamp (ms), reading, short key
MESSAGE = [b"\x5a" * 16, 48213, 1763600000123, 21.5625, "temp"]
N_CPY = 50000
N_VM = 5000

_VM_LOOP = """
import time
from shared_protocol.wire import cbor
m = [b"\\x5a" * 16, 48213, 1763600000123, 21.5625, "temp"]
n = %d
t0 = time.ticks_us()
for _ in range(n):
    b = cbor.encode(m)
t1 = time.ticks_us()
for _ in range(n):
    cbor.decode(b)
t2 = time.ticks_us()
print("VM", time.ticks_diff(t1, t0) / n, time.ticks_diff(t2, t1) / n, len(b))
""" % N_VM

# Heap: each step is its own runPython call so collections really run between.
_VM_HEAP = [
    "import gc",
    "gc.collect()",
    "base = gc.mem_alloc()",
    "from shared_protocol.wire import cbor, envelope, framing",
    "gc.collect()",
    "print('HEAP', gc.mem_alloc() - base)",
]


def _per_op_us(fn, n):
    best = None
    for _ in range(3):  # best of three passes: least disturbed by noise
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = (time.perf_counter() - t0) / n * 1e6
        best = dt if best is None else min(best, dt)
    return best


def main():
    ours_b = cbor.encode(MESSAGE)
    theirs_b = cbor2.dumps(MESSAGE, canonical=True)
    assert ours_b == theirs_b
    enc_ours = _per_op_us(lambda: cbor.encode(MESSAGE), N_CPY)
    enc_c2 = _per_op_us(lambda: cbor2.dumps(MESSAGE, canonical=True), N_CPY)
    dec_ours = _per_op_us(lambda: cbor.decode(ours_b), N_CPY)
    dec_c2 = _per_op_us(lambda: cbor2.loads(ours_b), N_CPY)
    env_b = envelope.REGISTRY.encode("error", "x", "y", None)
    env_us = _per_op_us(lambda: envelope.REGISTRY.decode(env_b), N_CPY)

    r = vm.run([_VM_LOOP], timeout=300)
    if r.returncode:
        raise SystemExit("VM run failed: " + r.stderr)
    _, vm_enc, vm_dec, _ = [l for l in r.stdout.splitlines() if l.startswith("VM")][0].split()
    vm_enc, vm_dec = float(vm_enc), float(vm_dec)
    h = vm.run(_VM_HEAP, timeout=120)
    heap = int([l for l in h.stdout.splitlines() if l.startswith("HEAP")][0].split()[1])

    rows = [
        ("cbor2 6.2.1 canonical (C ext), CPython", enc_c2, dec_c2, enc_c2 + dec_c2, 1.0),
        ("upsycle codec, CPython", enc_ours, dec_ours, enc_ours + dec_ours, (enc_ours + dec_ours) / (enc_c2 + dec_c2)),
        ("upsycle codec, MicroPython 1.27 VM", vm_enc, vm_dec, vm_enc + vm_dec, (vm_enc + vm_dec) / (enc_c2 + dec_c2)),
    ]
    print(render("Sensor publish message (%d bytes): encode + decode, us per message" % len(ours_b),
                 ("codec", "encode us", "decode us", "total us", "x cbor2"), rows))
    print(render("Other figures", ("what", "value"), [
        ("envelope decode+check of an error message, CPython, us", env_us),
        ("retained heap of cbor+envelope+framing in the VM, bytes", heap),
    ]))
