# Runs on CPython and in the MicroPython VM: the edge session's messages
# (session/messages.py): the message id layout and the fast codec.
from shared_protocol.wire import envelope as E
from shared_protocol.session import messages as W
from rig import raises
from session_pair import NODE, T1


def test_message_id_layout():
    mid = W.message_id(b"abc", 258)
    assert mid == b"abc" + b"\x00" * 6 + b"\x01\x02"
    assert len(W.message_id(b"n" * 32, 1)) == W.MSG_ID_SIZE <= W.MSG_ID_MAX
    assert W.message_seq(mid) == 258
    assert W.message_seq(W.message_id(NODE, 2 ** 63 + 5)) == 2 ** 63 + 5


def test_fast_codec_is_byte_identical_to_the_registry():
    from shared_protocol.wire import cbor
    seqs = (0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, W.SEQ_MAX)
    lens = (0, 1, 23, 24, 32)
    for s in seqs:
        for n in lens:
            t = b"t" * (n or 1)
            mid = b"m" * n
            for pl in (b"", b"p" * 24, b"q" * 1024):
                cases = [
                    (W.encode_publish(t, mid, pl), "s_publish", [t, mid, pl]),
                    (W.encode_deliver(t, s, mid, pl), "s_deliver", [t, s, mid, pl]),
                    (W.encode_puback(mid), "s_puback", [mid]),
                    (W.encode_dack(t, s), "s_dack", [t, s]),
                ]
                for data, name, vals in cases:
                    assert data == E.REGISTRY.encode(name, *vals), (name, s, n)
                    assert W.decode(data) == (name, vals), (name, s, n)
    # Non-canonical or over-bound forms are not taken by the fast path: the
    # strict decoder reports them.
    good = W.encode_dack(T1, 5)
    bad = [
        (good[:4] + b"\x58\x10" + T1 + b"\x05", cbor.DecodeError),        # 1-byte length that fits the head
        (good + b"\x00", cbor.DecodeError),                               # trailing byte
        (good[:-1] + b"\x18\x05", cbor.DecodeError),                      # seq 5 in two bytes
        (W.encode_publish(T1, b"m", b"")[:-1] + b"\x59\x04\x01" + b"x" * 1025, E.EnvelopeError),
        (good[:-1], cbor.DecodeError),                                    # truncated
    ]
    for data, exc in bad:
        raises(exc, W.decode, data)
    raises(E.RegistryError, W.encode_publish, T1, b"m", b"x" * 1025)
