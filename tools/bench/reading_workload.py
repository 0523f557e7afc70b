# CPU per reading, the same file on CPython, the MicroPython VM (host/upsycle/
# mpvm/run.mjs) and a MicroPython binary (MICROPYPATH=<checkout>). Prints one line:
#   @@BENCH {"<form>_seal": ms per reading, "<form>_open": ms per reading, ...}
# forms: "pub" (group_pub: key, capability and signature in every message,
# the format before compact readings), "rd" (group_rd, one signature per
# reading, author introduced once), "rdbatch" (group_rd, BATCH_MAX readings
# under one signature), "rs" and "batch" (the same as signed readings,
# group_rs: no AEAD tag, the op's author ids packed). Medians of N messages;
# a batch's figure is divided by its readings; the forms take turns. The reader has already met
# the author (steady state).
import json
import sys
import time

from shared_protocol.groups import wire
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import member_from_invite
from shared_protocol.rand import Rng

_MICRO = sys.implementation.name == "micropython"
NOW = 1763683201


def _now_us():
    return time.ticks_us() if _MICRO else int(time.perf_counter() * 1e6)


def _ms(t0, t1):
    return (time.ticks_diff(t1, t0) if _MICRO else t1 - t0) / 1000.0


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def run(n):
    r = Rng(11)
    admin = Admin(r.randbytes(32), r.randbytes(32))
    writer = member_from_invite(admin.invite(r.randbytes(32), True, True))
    reader = member_from_invite(admin.invite(r.randbytes(32), True, False))
    # a DMC append op as a node sends it (61 bytes: its author id, seq,
    # clock, deps of two other authors, name, time, value), and the
    # dictionary the node packs it with (firmware/topic.py reading_dictionary)
    me, a1, a2 = b"\x48" + r.randbytes(8), b"\x48" + r.randbytes(8), b"\x48" + r.randbytes(8)
    op = (b"\x88" + me + b"\x19\x03\xe8\x19\x03\xe9\x84" + a1 + b"\x19\x03\xe8" + a2 + b"\x19\x03\xe8"
          + b"\x05\x64temp\x1a\x69\x20\x95\xe0\xfb\x40\x37\x73\x33\x33\x33\x33\x33")
    writer.set_dictionary([me, b"\x64temp", a1, a2])
    # the reader meets the writer once in each form (its introduction)
    reader.open(writer.seal_compact([op], False, r.randbytes(32), NOW), NOW)
    writer.reintroduce()
    reader.open(writer.seal_reading(op, r.randbytes(32), NOW), NOW)
    out = {}
    forms = (("pub", 1, lambda: writer.seal(op, r.randbytes(32), NOW)),
             ("rd", 1, lambda: writer.seal_compact([op], False, r.randbytes(32), NOW)),
             ("rdbatch", wire.BATCH_MAX, lambda: writer.seal_compact([op] * wire.BATCH_MAX, True, r.randbytes(32), NOW)),
             ("rs", 1, lambda: writer.seal_reading(op, r.randbytes(32), NOW)),
             ("batch", wire.BATCH_MAX, lambda: writer.seal_batch([op] * wire.BATCH_MAX, r.randbytes(32), NOW)))
    # the forms take turns, message by message, so a busy machine slows
    # them alike and the ratios hold
    seals, opens = {}, {}
    for name, _, _ in forms:
        seals[name], opens[name] = [], []
    for _ in range(n):
        for name, per, seal in forms:
            t0 = _now_us()
            msg = seal()
            t1 = _now_us()
            reader.open(msg, NOW)
            t2 = _now_us()
            seals[name].append(_ms(t0, t1) / per)
            opens[name].append(_ms(t1, t2) / per)
    for name, _, _ in forms:
        out[name + "_seal"] = _median(seals[name])
        out[name + "_open"] = _median(opens[name])
    print("@@BENCH " + json.dumps(out))


if __name__ == "__main__" or _MICRO:
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
