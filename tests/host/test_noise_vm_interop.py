"""Cross-interpreter interop: our Noise responder running inside the
MicroPython VM completes a handshake with the `noiseprotocol` package on
CPython, then both exchange transport messages.

The VM run is one-shot, so the responder is run twice with the same static
and ephemeral keys: the first run answers message 1; the second replays
message 1 (giving the same message 2), then reads message 3 and the host's
transport message, and replies.
"""
import os

from noise.connection import Keypair, NoiseConnection

from upsycle import vm


VM_RESPONDER = """
import binascii
from shared_protocol.noise.handshake import Handshake
h = binascii.unhexlify
r = Handshake(False, h(%(s)r), h(%(e)r), b"upsycle/1")
print("P1", r.read_message(h(%(m1)r)))
print("M2", binascii.hexlify(r.write_message(b"vm responder")).decode())
m3 = %(m3)r
if m3:
    print("P3", r.read_message(h(m3)))
    send, recv = r.split()
    print("T", recv.decrypt_with_ad(b"", h(%(t)r)))
    print("R", binascii.hexlify(send.encrypt_with_ad(b"", b"ack from micropython")).decode())
    print("HH", binascii.hexlify(r.handshake_hash).decode())
"""


def _vm(**kw):
    p = vm.run([VM_RESPONDER % kw], timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        out[k] = v
    return out


def test_vm_responder_with_noiseprotocol_initiator():
    s, e = os.urandom(32).hex(), os.urandom(32).hex()
    c = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
    c.set_as_initiator()
    c.set_keypair_from_private_bytes(Keypair.STATIC, os.urandom(32))
    c.set_prologue(b"upsycle/1")
    c.start_handshake()
    m1 = c.write_message(b"hello vm").hex()
    first = _vm(s=s, e=e, m1=m1, m3="", t="")
    assert first["P1"] == "b'hello vm'"
    assert c.read_message(bytes.fromhex(first["M2"])) == b"vm responder"
    m3 = c.write_message(b"host initiator").hex()
    assert c.handshake_finished
    t = c.encrypt(b"reading 21.5C").hex()
    second = _vm(s=s, e=e, m1=m1, m3=m3, t=t)
    assert second["M2"] == first["M2"]
    assert second["P3"] == "b'host initiator'"
    assert second["T"] == "b'reading 21.5C'"
    assert c.decrypt(bytes.fromhex(second["R"])) == b"ack from micropython"
    assert bytes.fromhex(second["HH"]) == c.get_handshake_hash()
