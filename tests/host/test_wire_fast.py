"""The host's fast paths (upsycle.wire_fast, upsycle.noise_fast, the proxy's
HostProxySession) against the shared code they stand in for: the same bytes
out, the same values or the same typed errors in, for valid, edge and
garbled input."""
import os
import random

import pytest
from hypothesis import given, settings, strategies as st

from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W
from shared_protocol.errors import UpsycleError
from shared_protocol.noise.datagram import DatagramChannel
from shared_protocol.noise.errors import DecryptFailed
from shared_protocol.noise.symmetric import CipherState
from shared_protocol.session.proxy import ProxySession
from upsycle import crypto_nacl, noise_fast, wire_fast
from upsycle.proxy.fastpath import HostProxySession

ids = st.binary(min_size=0, max_size=W.TOPIC_ID_MAX)
mids = st.binary(min_size=0, max_size=W.MSG_ID_MAX)
payloads = st.binary(max_size=W.PAYLOAD_MAX)
# Sequence numbers around every CBOR head size boundary, and the bound.
seqs = st.one_of(st.integers(0, W.SEQ_MAX),
                 st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, W.SEQ_MAX]))


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except UpsycleError as e:
        return ("err", type(e).__name__, e.code, e.message)


@settings(max_examples=400, deadline=None)
@given(ids, seqs, mids, payloads)
def test_encoders_make_the_shared_bytes(topic, seq, mid, payload):
    assert wire_fast.encode_publish(topic, mid, payload) == W.encode_publish(topic, mid, payload)
    assert wire_fast.encode_puback(mid) == W.encode_puback(mid)
    assert wire_fast.encode_deliver(topic, seq, mid, payload) == W.encode_deliver(topic, seq, mid, payload)
    assert wire_fast.encode_dack(topic, seq) == W.encode_dack(topic, seq)


def test_encoders_refuse_what_the_shared_ones_refuse():
    big = b"x" * (W.TOPIC_ID_MAX + 1)
    for fast, shared, args in (
            (wire_fast.encode_publish, W.encode_publish, (big, b"m", b"p")),
            (wire_fast.encode_publish, W.encode_publish, (b"t", b"m", b"p" * (W.PAYLOAD_MAX + 1))),
            (wire_fast.encode_puback, W.encode_puback, (b"m" * (W.MSG_ID_MAX + 1),)),
            (wire_fast.encode_deliver, W.encode_deliver, (b"t", W.SEQ_MAX + 1, b"m", b"p")),
            (wire_fast.encode_deliver, W.encode_deliver, (b"t", -1, b"m", b"p")),
            (wire_fast.encode_dack, W.encode_dack, (big, 1))):
        a, b = outcome(fast, *args), outcome(shared, *args)
        assert a[0] == "err" and a[:3] == b[:3], (args, a, b)


def _samples(rnd):
    t, m = os.urandom(16), os.urandom(16)
    msgs = [
        W.encode_publish(t, m, os.urandom(64)), W.encode_puback(m), W.encode_deliver(t, 300, m, b""),
        W.encode_dack(t, 2 ** 40), E.REGISTRY.encode("s_hello", m, 1000, 32), E.REGISTRY.encode("ping", 7),
        E.REGISTRY.encode("s_subscribe", t), E.REGISTRY.encode("s_reject", m, "limit", "no"),
    ]
    out = list(msgs)
    for base in msgs:
        for _ in range(20):   # garbled: truncated, a byte flipped, bytes appended
            b = bytearray(base)
            r = rnd.random()
            if r < 0.3:
                b = b[:rnd.randrange(len(b))]
            elif r < 0.7:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            else:
                b += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4)))
            out.append(bytes(b))
    # non-canonical forms of valid values: a long head for a short length or number
    out.append(b"\x85\x01\x18\x36\x58\x02ab\x41m\x41p")
    out.append(b"\x84\x01\x18\x3a\x41t\x18\x05")
    out.append(b"\x84\x01\x18\x3a\x41t\x19\x00\x05")
    out.append(b"\x84\x01\x18\x3a\x41t\x1a\x00\x00\xff\xff")
    out.append(b"\x84\x01\x18\x3a\x41t\x1b\x00\x00\x00\x00\xff\xff\xff\xff")
    out.append(b"\x84\x01\x18\x3a\x41t\x1b\xff\xff\xff\xff\xff\xff\xff\xff")    # seq over SEQ_MAX
    out.append(b"\x85\x01\x18\x36\x41t\x41m\x59\x00\x05ppppp")                 # a long head for a payload
    out.append(b"\x85\x01\x18\x36\x41t\x41m\x59\x04\x01" + b"p" * 1025)          # payload over PAYLOAD_MAX
    out.append(b"\x85\x01\x18\x36\x58\x21" + b"t" * 33 + b"\x41m\x41p")         # topic over its bound
    out.append(b"\x84\x01\x18\x3a\x41t\xc2\x45\x01\x00\x00\x00\x00")   # a bignum tag where a uint goes
    out.append(b"\x84\x01\x18\x3a\x41t\xf5")                             # true where a uint goes
    out.append(b"\x84\x01\x18\x3a\x61t\x01")                             # text where bytes go
    out.append(b"\x9f\x01\x18\x37\x41m\xff")                             # indefinite array
    out.append(b"\x83\x01\x18\x37\x5f\x41m\xff")                         # indefinite bytes
    return out


def test_decode_gives_the_shared_values_or_the_shared_error():
    rnd = random.Random(16)
    for _ in range(30):
        for data in _samples(rnd):
            assert outcome(wire_fast.decode, data) == outcome(W.decode, data), data.hex()


@settings(max_examples=300, deadline=None)
@given(ids, seqs, mids, payloads)
def test_decode_round_trips(topic, seq, mid, payload):
    for data in (W.encode_publish(topic, mid, payload), W.encode_deliver(topic, seq, mid, payload),
                 W.encode_dack(topic, seq), W.encode_puback(mid)):
        assert wire_fast.decode(data) == W.decode(data)


def _feed_all(dec, chunks):
    out = []
    try:
        for c in chunks:
            out.extend(dec.feed(c))
    except framing.FrameError as e:
        return out, (e.code, e.message)
    return out, None


def test_stream_decoder_matches_the_shared_one():
    rnd = random.Random(7)
    for trial in range(300):
        frames = [os.urandom(rnd.randrange(1, 300)) for _ in range(rnd.randrange(1, 12))]
        stream = bytearray(b"".join(framing.frame(f) for f in frames))
        if trial % 3 == 1:    # an oversized declaration somewhere
            stream[rnd.randrange(0, len(stream))] = 0xFF
        elif trial % 3 == 2:  # an empty frame
            stream += b"\x00\x00" + framing.frame(b"x")
        cuts = sorted(rnd.randrange(len(stream) + 1) for _ in range(rnd.randrange(0, 6)))
        chunks = [bytes(stream[a:b]) for a, b in zip([0] + cuts, cuts + [len(stream)])]
        limit = 512
        a = _feed_all(wire_fast.StreamDecoder(limit), chunks)
        b = _feed_all(framing.StreamDecoder(limit), chunks)
        # frames handed out before an error are the same too (feed returns
        # per call, so compare what both delivered until the error)
        assert a == b, trial


def test_frames_match_the_shared_framing():
    msgs = [os.urandom(n) for n in (1, 23, 255, 256, 4096)]
    assert wire_fast.frames(msgs) == b"".join(framing.frame(m) for m in msgs)
    for m in msgs:
        assert wire_fast.frame(m) == framing.frame(m)
    for bad in (b"", b"x" * 4097):
        assert outcome(wire_fast.frame, bad)[:3] == outcome(framing.frame, bad)[:3]
        assert outcome(wire_fast.frames, [bad])[:3] == outcome(framing.frame, bad)[:3]


def test_cipher_state_matches_the_shared_one():
    crypto_nacl.install()
    k = os.urandom(32)
    shared, fast = CipherState(k, 5), noise_fast.fast(CipherState(k, 5))
    assert isinstance(fast, noise_fast.HostCipherState)
    for n in (0, 1, 100, 1200, 4000):
        m = os.urandom(n)
        ad = os.urandom(n % 7)
        c = fast.encrypt_with_ad(ad, m)
        assert c == shared.encrypt_with_ad(ad, m)
        assert fast.n == shared.n
    rx_s, rx_f = CipherState(k, 5), noise_fast.fast(CipherState(k, 5))
    tx = CipherState(k, 5)
    for n in (0, 17, 1000):
        c = tx.encrypt_with_ad(b"", os.urandom(n))
        bad = bytearray(c)
        bad[-1] ^= 1
        for rx in (rx_s, rx_f):
            before = rx.n
            assert outcome(rx.decrypt_with_ad, b"", bytes(bad))[:3] == ("err", "DecryptFailed", DecryptFailed.code)
            assert rx.n == before    # Noise §5.1: a failure does not use up the nonce
        assert rx_f.decrypt_with_ad(b"", c) == rx_s.decrypt_with_ad(b"", c)
        # datagram mode hands over a view of the packet, not a copy
        # (noise/datagram.py): both take it, bytes out
        for rx in (rx_s, rx_f):
            out = rx.decrypt_at(rx.n - 1, b"", memoryview(b"\x00\x01" + c)[2:])
            assert type(out) is bytes and out == rx_s.decrypt_at(rx_s.n - 1, b"", c)
    assert outcome(rx_f.decrypt_with_ad, b"", b"short")[:3] == ("err", "DecryptFailed", DecryptFailed.code)
    # Used-up nonces and oversized input: the same typed errors, nothing advanced.
    from shared_protocol.noise.symmetric import NONCE_MAX
    from shared_protocol.crypto.api import MESSAGE_SIZE_MAX
    for n, op, arg in ((NONCE_MAX + 1, "encrypt_with_ad", b"m"), (NONCE_MAX + 1, "decrypt_with_ad", b"c" * 20),
                       (0, "encrypt_with_ad", b"m" * (MESSAGE_SIZE_MAX + 1)),
                       (0, "decrypt_with_ad", b"c" * (MESSAGE_SIZE_MAX + 17))):
        a, b = CipherState(k, n), noise_fast.fast(CipherState(k, n))
        assert outcome(getattr(a, op), b"", arg)[:2] == outcome(getattr(b, op), b"", arg)[:2], (n, op)
        assert outcome(getattr(b, op), b"", arg)[0] == "err" and a.n == b.n == n
    s2, f2 = CipherState(k), noise_fast.fast(CipherState(k))
    s2.rekey()
    f2.rekey()
    assert s2.k == f2.k


def test_encrypt_many_is_encrypt_with_ad_of_each():
    crypto_nacl.install()
    from shared_protocol.noise.symmetric import NONCE_MAX
    from shared_protocol.crypto.api import MESSAGE_SIZE_MAX
    k = os.urandom(32)
    msgs = [os.urandom(n) for n in (0, 1, 100, 1200, 4000)]
    shared, fast = CipherState(k, 7), noise_fast.fast(CipherState(k, 7))
    assert fast.encrypt_many(b"ad", msgs) == [shared.encrypt_with_ad(b"ad", m) for m in msgs]
    assert fast.n == shared.n == 12
    # an error part-way: the messages before it used their nonces, as one by one
    for start, bad in ((NONCE_MAX - 1, b"m"), (0, b"m" * (MESSAGE_SIZE_MAX + 1))):
        a, b = CipherState(k, start), noise_fast.fast(CipherState(k, start))
        batch = [b"x", b"y", bad] if bad != b"m" else [b"x", b"y", b"z"]
        one = []
        for m in batch:
            r = outcome(a.encrypt_with_ad, b"", m)
            one.append(r)
            if r[0] == "err":
                break
        many = outcome(b.encrypt_many, b"", batch)
        assert many[:2] == one[-1][:2] and many[0] == "err"
        assert a.n == b.n


def test_datagram_channel_with_fast_ciphers_interoperates():
    crypto_nacl.install()
    k1, k2 = os.urandom(32), os.urandom(32)
    a = DatagramChannel(CipherState(k1), CipherState(k2))
    b = DatagramChannel(noise_fast.fast(CipherState(k2)), noise_fast.fast(CipherState(k1)))
    for i in range(50):
        p = os.urandom(i * 7)
        assert b.open(a.seal(p)) == p
        assert a.open(b.seal(p)) == p
    pkt = a.seal(b"once")
    assert b.open(pkt) == b"once"
    assert outcome(b.open, pkt)[2] == "noise_replay"


def _drive(cls):
    """A scripted session: hello, publishes, deliveries, acks, garbage."""
    t, node = b"T" * 16, b"N" * 16
    ps = cls(b"proxy-id", True, 0)
    out, events = [], []
    inputs = [E.REGISTRY.encode("s_hello", node, 1000, 8), W.encode_publish(t, node[:8] + b"\x00" * 8, b"p" * 30),
              b"\x84\x01\x18\x3a\x41t\x18\x05", b"garbage", W.encode_dack(t, 2)]
    for i, data in enumerate(inputs):
        ps.receive(data, i)
        for ev in ps.events():
            events.append(ev)
            if ev[0] == "hello":
                ps.accept()
            elif ev[0] == "publish":
                ps.acked(ev[2])
        if i == 1:
            for seq in range(1, 4):
                ps.deliver(t, seq, node[:8] + bytes([seq]) * 8, b"d" * seq * 100, i)
        out.extend(ps.data_to_send())
    return out, events


def test_host_proxy_session_sends_the_same_bytes():
    assert _drive(HostProxySession) == _drive(ProxySession)


def test_one_call_field_readers_agree_with_decode():
    """publish_fields, deliver_fields and puback_id: the values decode gives
    for the forms they take, None for every other input (which then goes
    through decode)."""
    rnd = random.Random(17)
    readers = ((wire_fast.publish_fields, "s_publish"), (wire_fast.deliver_fields, "s_deliver"),
               (wire_fast.puback_id, "s_puback"))
    samples = []
    for _ in range(30):
        samples += _samples(rnd)
    for n in (0, 1, 23, 24, 32):
        for seq in (0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, W.SEQ_MAX):
            t, m = os.urandom(n), os.urandom(max(0, 32 - n))
            samples += [W.encode_publish(t, m, os.urandom(seq % 1025)), W.encode_deliver(t, seq, m, b"p" * (n * 30)),
                        W.encode_puback(m), W.encode_puback(t)]
    for data in samples:
        try:
            name, values = W.decode(data)
        except Exception:
            name, values = None, None
        for read, kind in readers:
            got = read(data)
            if got is None:
                continue   # not taken: decode's answer stands
            assert name == kind, data.hex()
            assert (got == values[0]) if kind == "s_puback" else (list(got) == values), data.hex()
    # the usual forms are taken (not only refused)
    t, m = os.urandom(16), os.urandom(16)
    assert wire_fast.publish_fields(W.encode_publish(t, m, b"x" * 64)) == (t, m, b"x" * 64)
    assert wire_fast.deliver_fields(W.encode_deliver(t, 70000, m, b"x" * 300)) == (t, 70000, m, b"x" * 300)
    assert wire_fast.puback_id(W.encode_puback(m)) == m


def test_deliver_run_makes_encode_deliver_bytes():
    t = os.urandom(16)
    rows = [(seq, os.urandom(16), os.urandom(seq % 1025)) for seq in (1, 23, 24, 300, 70000, 2 ** 32 + 5)]
    assert wire_fast.deliver_run(t, rows) == [W.encode_deliver(t, s, m, p) for s, m, p in rows]
    with pytest.raises(E.RegistryError):
        wire_fast.deliver_run(b"t" * 33, rows)
    with pytest.raises(E.RegistryError):
        wire_fast.deliver_run(t, [(1, b"m" * 33, b"")])
