# Runs on CPython and in the MicroPython VM: the Noise_XX handshake, the stream
# and datagram transports, and the attacks they must reject without a state change.
from rig import raises
from shared_protocol.crypto import api
from shared_protocol.noise.datagram import REPLAY_WINDOW, DatagramChannel
from shared_protocol.wire import framing
from shared_protocol.noise.errors import (DecryptFailed, HandshakeFailed, NoiseUsageError,
                                          ReplayedMessage, UnexpectedStaticKey)
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.stream import NEED_DATA, HandshakeComplete, Message, NoiseStream
from shared_protocol.rand import Rng

PROLOGUE = b"upsycle/1"


def _keys(seed):
    r = Rng(seed)
    return r.randbytes(32), r.randbytes(32)


def _pair(expect_i=None, expect_r=None):
    si, ei = _keys(1)
    sr, er = _keys(2)
    i = Handshake(True, si, ei, PROLOGUE, expected_remote_static=expect_r)
    r = Handshake(False, sr, er, PROLOGUE, expected_remote_static=expect_i)
    return i, r


def _state(hs):
    return (hs._step, hs._ss.h, hs._ss.ck, hs._ss.cs.k, hs._ss.cs.n, hs._re, hs.remote_static)


def test_full_handshake_and_transport_both_ways():
    i, r = _pair()
    assert r.read_message(i.write_message(b"hi")) == b"hi"
    assert i.read_message(r.write_message(b"proxy")) == b"proxy"
    assert r.read_message(i.write_message(b"node")) == b"node"
    assert i.complete and r.complete
    assert i.handshake_hash == r.handshake_hash
    assert i.remote_static == r.static_public and r.remote_static == i.static_public
    isend, irecv = i.split()
    rsend, rrecv = r.split()
    for k in range(3):
        assert rrecv.decrypt_with_ad(b"", isend.encrypt_with_ad(b"", b"t=%d" % k)) == b"t=%d" % k
        assert irecv.decrypt_with_ad(b"", rsend.encrypt_with_ad(b"", b"ack")) == b"ack"


def test_rejects_truncated_and_altered_handshake_messages_without_state_change():
    i, r = _pair()
    m1 = i.write_message(b"")
    raises(HandshakeFailed, r.read_message, m1[:31])          # truncated ephemeral
    r.read_message(m1)
    m2 = r.write_message(b"payload")
    before = _state(i)
    cases = [m2[:40], m2[:32 + 48 + 15], m2[:-1]]
    for pos in (0, 40, len(m2) - 1):                          # e, encrypted s, payload tag
        bad = bytearray(m2)
        bad[pos] ^= 1
        cases.append(bytes(bad))
    for bad in cases:
        e = raises(HandshakeFailed, i.read_message, bad)
        assert e.code == "noise_handshake_failed"
        assert _state(i) == before, "state changed after a rejected message"
    assert i.read_message(m2) == b"payload"                   # the real one still works
    m3 = i.write_message(b"")
    bad = bytearray(m3)
    bad[5] ^= 0x40
    raises(HandshakeFailed, r.read_message, bytes(bad))
    r.read_message(m3)
    assert r.complete


def test_rejects_unexpected_static_key():
    other = api.x25519_public(b"\x07" * 32)
    i, r = _pair(expect_r=other)
    r.read_message(i.write_message(b""))
    m2 = r.write_message(b"")
    before = _state(i)
    e = raises(UnexpectedStaticKey, i.read_message, m2)
    assert e.code == "noise_unexpected_static_key"
    assert _state(i) == before
    # and the responder side, checking the initiator's key in message 3
    i, r = _pair(expect_i=other)
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    raises(UnexpectedStaticKey, r.read_message, i.write_message(b""))
    assert not r.complete


def test_expected_static_key_accepted():
    si, _ = _keys(1)
    sr, _ = _keys(2)
    i, r = _pair(expect_i=api.x25519_public(si), expect_r=api.x25519_public(sr))
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    r.read_message(i.write_message(b""))
    assert r.complete and i.complete


def test_out_of_turn_use_is_a_local_error():
    i, r = _pair()
    raises(NoiseUsageError, r.write_message, b"")
    raises(NoiseUsageError, i.read_message, b"x" * 32)
    raises(NoiseUsageError, i.split)


def test_transport_rejects_tampered_message_and_keeps_nonce():
    i, r = _pair()
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    r.read_message(i.write_message(b""))
    isend, _ = i.split()
    _, rrecv = r.split()
    ct = isend.encrypt_with_ad(b"", b"21.5C")
    bad = bytearray(ct)
    bad[0] ^= 1
    raises(DecryptFailed, rrecv.decrypt_with_ad, b"", bytes(bad))
    assert rrecv.n == 0
    assert rrecv.decrypt_with_ad(b"", ct) == b"21.5C"


def _streams(max_frame=4096):
    i, r = _pair()
    return NoiseStream(i, max_frame=max_frame), NoiseStream(r, max_frame=max_frame)


def _pump(src, dst, byte_at_a_time=False):
    data = src.data_to_send()
    events = []
    chunks = [data[k:k + 1] for k in range(len(data))] if byte_at_a_time else [data]
    for c in chunks:
        assert dst.receive_data(c) == len(c)
        while True:
            ev = dst.next_event()
            if ev is NEED_DATA:
                break
            events.append(ev)
    return events


def test_stream_handshake_and_messages_whole_and_byte_by_byte():
    for slow in (False, True):
        a, b = _streams()
        a.start()
        assert _pump(a, b, slow) == []
        ev = _pump(b, a, slow)
        assert len(ev) == 1 and isinstance(ev[0], HandshakeComplete)
        ev = _pump(a, b, slow)
        assert len(ev) == 1 and isinstance(ev[0], HandshakeComplete)
        assert ev[0].handshake_hash == a._hs.handshake_hash
        b.receive_data(a.send(b"one") + a.send(b"two"))
        assert [e.data for e in (b.next_event(), b.next_event())] == [b"one", b"two"]
        assert b.next_event() is NEED_DATA
        a.receive_data(b.send(b"back"))
        m = a.next_event()
        assert isinstance(m, Message) and m.data == b"back"


def test_stream_rejects_oversized_frame_and_stays_failed():
    a, b = _streams(max_frame=256)
    b.receive_data(b"\x01\x01")   # announces 257 bytes
    e = raises(framing.FrameError, b.next_event)
    assert e.code == framing.OVERSIZE
    raises(NoiseUsageError, b.next_event)   # sticky: the stream is out of step
    raises(NoiseUsageError, b.receive_data, b"x")


def test_stream_partial_frame_consumes_nothing():
    a, b = _streams()
    a.start()
    data = a.data_to_send()
    b.receive_data(data[:-1])
    assert b.next_event() is NEED_DATA
    assert b.data_to_send() == b""
    b.receive_data(data[-1:])
    assert b.next_event() is NEED_DATA
    assert len(b.data_to_send()) > 2


def _channels(window=REPLAY_WINDOW):
    i, r = _pair()
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    r.read_message(i.write_message(b""))
    s1, r1 = i.split()
    s2, r2 = r.split()
    return DatagramChannel(s1, r1, window), DatagramChannel(s2, r2, window)


def test_datagram_reordering_accepted_replay_rejected():
    a, b = _channels(window=8)
    pkts = [a.seal(b"p%d" % k) for k in range(12)]
    order = [1, 0, 3, 2, 5, 4, 11, 6, 10]
    for k in order:
        assert b.open(pkts[k]) == b"p%d" % k
    for k in order:
        e = raises(ReplayedMessage, b.open, pkts[k])     # nonce reuse
        assert e.code == "noise_replay"
    raises(ReplayedMessage, b.open, pkts[3])              # 11 - 3 >= window: too old
    assert b.open(pkts[7]) == b"p7"                        # still inside the window


def test_datagram_forgery_changes_nothing():
    a, b = _channels()
    p = a.seal(b"reading")
    bad = bytearray(p)
    bad[12] ^= 1
    raises(DecryptFailed, b.open, bytes(bad))
    forged_nonce = bytearray(p)
    forged_nonce[0] = 0x7F     # a huge nonce that does not authenticate
    raises(DecryptFailed, b.open, bytes(forged_nonce))
    assert b.replay.top == -1 and b.replay.seen == 0
    assert b.open(p) == b"reading"
    raises(DecryptFailed, b.open, b"\x00" * 17)             # shorter than nonce + tag
    raises(DecryptFailed, b.open, b"\x00" * 2000)           # over the datagram limit


def test_node_identity_keys_drive_the_handshake():
    # A node's one provisioned Ed25519 identity gives its Noise static key;
    # a peer that knows the node's identity public key can insist on it.
    node_seed, proxy_seed = Rng(11).randbytes(32), Rng(12).randbytes(32)
    node_id_pub = api.ed25519_public(node_seed)
    proxy_id_pub = api.ed25519_public(proxy_seed)
    i = Handshake(True, api.ed25519_seed_to_x25519(node_seed), Rng(13).randbytes(32), PROLOGUE,
                  expected_remote_static=api.ed25519_pk_to_x25519(proxy_id_pub))
    r = Handshake(False, api.ed25519_seed_to_x25519(proxy_seed), Rng(14).randbytes(32), PROLOGUE,
                  expected_remote_static=api.ed25519_pk_to_x25519(node_id_pub))
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    r.read_message(i.write_message(b""))
    assert i.complete and r.complete
    assert r.remote_static == api.ed25519_pk_to_x25519(node_id_pub)


def test_rekey_both_ends_in_step():
    i, r = _pair()
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    r.read_message(i.write_message(b""))
    send, _ = i.split()
    _, recv = r.split()
    old = recv.copy()
    send.rekey()
    recv.rekey()
    ct = send.encrypt_with_ad(b"", b"fresh key")
    raises(DecryptFailed, old.decrypt_with_ad, b"", ct)
    assert recv.decrypt_with_ad(b"", ct) == b"fresh key"


def test_datagram_nonce_rebuilt_from_its_low_bits_across_the_wrap():
    # A packet carries the nonce's low 16 bits; the receiver rebuilds the
    # nonce closest to the next it expects (RFC 9147 §4.2.2), so the
    # channel runs on past 2^16 packets, reordered across the wrap.
    from shared_protocol.noise import datagram
    from shared_protocol.replay import ReplayWindow
    assert datagram.NONCE_PREFIX == 2
    a, b = _channels()
    a._send.n = 65533
    b.replay = ReplayWindow(REPLAY_WINDOW, 65532, 1)
    pkts = [a.seal(b"p%d" % k) for k in range(6)]    # nonces 65533 .. 65538
    assert len(pkts[0]) == 2 + 16 + 2 and pkts[3][:2] == b"\x00\x00"
    for k in (1, 0, 4, 3, 2, 5):
        assert b.open(pkts[k]) == b"p%d" % k
    assert b.replay.top == 65538
    raises(ReplayedMessage, b.open, pkts[3])


def test_datagram_packet_replayed_a_wrap_later_fails_authentication():
    # Nonces n and n + 2^16 share their low bits: an old packet replayed
    # once the window is 2^16 further is rebuilt to the newer nonce and the
    # AEAD (run with the whole nonce) refuses it; nothing changes.
    from shared_protocol.replay import ReplayWindow
    a, b = _channels()
    old = a.seal(b"old reading")                      # nonce 0
    a._send.n = 65536 + 10
    b.replay = ReplayWindow(REPLAY_WINDOW, 65536 + 9, 1)
    raises(DecryptFailed, b.open, old)
    assert b.replay.top == 65536 + 9
    assert b.open(a.seal(b"new")) == b"new"           # nonce 65546 still opens
    # a packet from 2^15 or more ahead is rebuilt below: refused too
    a._send.n = 65546 + 40000
    raises((DecryptFailed, ReplayedMessage), b.open, a.seal(b"far ahead"))
    assert b.replay.top == 65546
