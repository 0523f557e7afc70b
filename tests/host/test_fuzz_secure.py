"""Mutated inputs to groups and Noise never escape as anything but a typed
UpsycleError, and never change state (sticky stream errors aside)."""
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from shared_protocol.wire import cbor
from shared_protocol.errors import UpsycleError
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import member_from_invite, member_from_url
from shared_protocol.noise.datagram import DatagramChannel
from shared_protocol.noise.handshake import Handshake

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_admin = Admin(os.urandom(32), os.urandom(32), name="fuzz")
_INVITE0 = _admin.invite(os.urandom(32), True, True)   # the fuzzed member, at epoch 0
_writer = member_from_invite(_admin.invite(os.urandom(32), True, True))
_wonly = member_from_invite(_admin.invite(os.urandom(32), False, True))
_reader = member_from_invite(_admin.invite(os.urandom(32), True, False))
_SAMPLES = [_writer.seal(b"reading 1", os.urandom(32)), _wonly.seal(b"reading 2", os.urandom(32)),
            # compact readings (groups/readings.py): with the author's introduction,
            # a batch, and one that relies on an introduction the reader lacks
            _writer.seal_reading(b"reading 3", os.urandom(32)),
            _writer.seal_reading(b"reading 4", os.urandom(32))]
_writer.reintroduce()
_SAMPLES.append(_writer.seal_batch([b"reading 5", b"reading 6", b"reading 7"], os.urandom(32)))
_SAMPLES.append(_admin.remove(_reader.identity.public, os.urandom(32), os.urandom(32))[0])


def _mutate(data, ops):
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            break
        p = pos % len(b)
        if kind == 0:
            b[p] ^= (val % 255) + 1
        elif kind == 1:
            del b[p:]
        elif kind == 2:
            b.insert(p, val % 256)
        else:
            del b[p]
    return bytes(b)


ops = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10 ** 6), st.integers(0, 10 ** 6)), min_size=1, max_size=4)


@FUZZ
@given(st.integers(0, len(_SAMPLES) - 1), ops)
def test_group_open_mutations(i, mutation):
    m = member_from_invite(_INVITE0)
    data = _mutate(_SAMPLES[i], mutation)
    before = cbor.encode(m.to_record())
    try:
        m.open(data, 0)
    except UpsycleError:
        assert cbor.encode(m.to_record()) == before
        return
    # everything is authenticated: only the unmodified bytes may open
    assert data == _SAMPLES[i]


@FUZZ
@given(st.binary(max_size=600))
def test_invite_url_garbage(raw):
    import binascii
    url = "upsycle://join?v=1&i=" + binascii.b2a_base64(raw).decode().strip().replace("+", "-").replace("/", "_")
    try:
        member_from_url(url)
    except UpsycleError:
        pass


def _handshake_pair():
    i = Handshake(True, os.urandom(32), os.urandom(32))
    r = Handshake(False, os.urandom(32), os.urandom(32))
    return i, r


@FUZZ
@given(st.integers(0, 2), ops)
def test_handshake_mutations(step, mutation):
    i, r = _handshake_pair()
    msgs = []
    for k in range(3):
        w, rd = (i, r) if k % 2 == 0 else (r, i)
        m = w.write_message(b"p%d" % k)
        if k == step:
            bad = _mutate(m, mutation)
            before = (rd._ss.h, rd._ss.ck, rd._step)
            try:
                rd.read_message(bad)
                assert bad == m or k == 0  # message 1 is unauthenticated: its payload may change
                return
            except UpsycleError:
                assert (rd._ss.h, rd._ss.ck, rd._step) == before
        rd.read_message(m)
        msgs.append(m)
    assert i.complete and r.complete


@FUZZ
@given(ops)
def test_datagram_mutations(mutation):
    i, r = _handshake_pair()
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    r.read_message(i.write_message(b""))
    a = DatagramChannel(*i.split())
    b = DatagramChannel(*r.split())
    p = a.seal(b"21.5C")
    bad = _mutate(p, mutation)
    try:
        assert b.open(bad) == b"21.5C"
        assert bad == p
    except UpsycleError:
        assert b.replay.top == -1


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_udp_session_garbage(packets):
    from shared_protocol.noise.udp import UdpSession
    s = UdpSession(Handshake(False, os.urandom(32), os.urandom(32)))
    for p in packets:
        try:
            s.receive(p, 0)
        except UpsycleError:
            pass
    assert not s.established
