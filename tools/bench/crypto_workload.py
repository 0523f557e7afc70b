# The crypto benchmark's workload, shared by CPython and the MicroPython VM
# (run through host/upsycle/mpvm/run.mjs). Prints one JSON line:
#   @@BENCH {"x25519": ms, ...}
# Each figure is the median of N runs, in milliseconds.
import json
import sys
import time

from shared_protocol.crypto import api
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import member_from_invite
from shared_protocol.noise.handshake import Handshake
from shared_protocol.rand import Rng

_MICRO = sys.implementation.name == "micropython"


def _now_us():
    return time.ticks_us() if _MICRO else int(time.perf_counter() * 1e6)


def _median_ms(fn, n, reps=1):
    # reps: calls per sample, for operations shorter than the VM clock's
    # millisecond resolution
    xs = []
    for _ in range(n):
        t0 = _now_us()
        for _ in range(reps):
            fn()
        t1 = _now_us()
        xs.append((time.ticks_diff(t1, t0) if _MICRO else t1 - t0) / 1000.0 / reps)
    xs.sort()
    return xs[len(xs) // 2]


def run(n):
    r = Rng(7)
    sk, pk_peer = r.randbytes(32), api.x25519_public(r.randbytes(32))
    seed = r.randbytes(32)
    pub = api.ed25519_public(seed)
    reading = b"t=21.53;h=48.2;p=1013.2;bat=3.71;seq=000123;node=garden-07;..."[:64]
    sig = api.ed25519_sign(seed, reading, pub)
    key, nonce = r.randbytes(32), r.randbytes(12)
    sealed = api.aead_encrypt(key, nonce, reading, b"")

    def handshake():
        i = Handshake(True, sk, r.randbytes(32), b"upsycle/1")
        s = Handshake(False, seed, r.randbytes(32), b"upsycle/1")
        s.read_message(i.write_message(b""))
        i.read_message(s.write_message(b""))
        s.read_message(i.write_message(b""))
        i.split()
        s.split()

    admin = Admin(r.randbytes(32), r.randbytes(32))
    writer = member_from_invite(admin.invite(r.randbytes(32), True, True))
    wonly = member_from_invite(admin.invite(r.randbytes(32), False, True))
    pubs = []

    def seal():
        pubs.append(writer.seal(reading, r.randbytes(32)))

    def seal_wo():
        pubs.append(wonly.seal(reading, r.randbytes(32)))

    out = {
        "x25519": _median_ms(lambda: api.x25519(sk, pk_peer), n, 5),
        "ed25519_sign": _median_ms(lambda: api.ed25519_sign(seed, reading, pub), n),
        "ed25519_verify": _median_ms(lambda: api.ed25519_verify(pub, reading, sig), n),
        "aead_encrypt_64B": _median_ms(lambda: api.aead_encrypt(key, nonce, reading, b""), n, 50),
        "aead_decrypt_64B": _median_ms(lambda: api.aead_decrypt(key, nonce, sealed, b""), n, 50),
        "noise_xx_handshake_both_sides": _median_ms(handshake, n),
        "group_seal_64B": _median_ms(seal, n),
        "group_seal_64B_write_only": _median_ms(seal_wo, n),
    }
    todo = list(pubs)
    out["group_open_64B"] = _median_ms(lambda: admin.open(todo.pop(0), 0), n)
    print("@@BENCH " + json.dumps(out))


if __name__ == "__main__" or _MICRO:
    run(int(sys.argv[1]) if len(sys.argv) > 1 and not _MICRO else 5)
