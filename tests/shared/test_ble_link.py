# Runs on CPython and in the MicroPython VM: the BLE message link
# (shared_protocol/ble/link.py) between two endpoints over an in-memory
# radio that loses, reorders and duplicates fragments.
from rig import raises
from shared_protocol import clock
from shared_protocol.ble.errors import BleLocalError, BleRemoteError
from shared_protocol.ble.link import (ATT_MTU_MIN, BAD_FRAGMENTS_MAX, FRAGMENTS_MAX, HEADER, KIND_DATA,
                                      MESSAGE_MAX, QUEUE_MAX, RETRIES_MAX, WINDOW_MAX, BleLink, payload_max)
from shared_protocol.rand import Rng


def _msg(i, n):
    return bytes([(i * 7 + k) & 0xFF for k in range(n)])


class Air:
    """Two links and the fragments between them. loss, dup: per mille;
    reorder: shuffle what one turn sends."""

    def __init__(self, mtu, window=WINDOW_MAX, loss=0, dup=0, reorder=False, seed=1, per_turn=FRAGMENTS_MAX):
        self.a = BleLink(window, mtu)
        self.b = BleLink(window, mtu)
        self.rng = Rng(seed)
        self.loss = loss
        self.dup = dup
        self.reorder = reorder
        self.per_turn = per_turn
        self.now = 1000
        self.got = {"a": [], "b": []}
        self.packets = 0

    def _carry(self, src, dst, name):
        frags = src.fragments_to_send(self.per_turn, self.now)
        if self.reorder and len(frags) > 1:
            for i in range(len(frags) - 1, 0, -1):
                j = self.rng.randbelow(i + 1)
                frags[i], frags[j] = frags[j], frags[i]
        for f in frags:
            self.packets += 1
            if self.loss and self.rng.randbelow(1000) < self.loss:
                continue
            copies = 2 if self.dup and self.rng.randbelow(1000) < self.dup else 1
            for _ in range(copies):
                dst.receive(f, self.now)
        self.got[name] += dst.messages()

    def turn(self, step_ms=50):
        self.now = clock.add(self.now, step_ms)
        self.a.poll(self.now)
        self.b.poll(self.now)
        self._carry(self.a, self.b, "b")
        self._carry(self.b, self.a, "a")

    def run(self, turns, step_ms=50):
        for _ in range(turns):
            self.turn(step_ms)


def _send_all(air, msgs, turns_between=0):
    pending = list(msgs)
    guard = 0
    while pending:
        while pending and air.a.can_send():
            air.a.send(pending.pop(0), air.now)
        air.turn()
        guard += 1
        assert guard < 20000, "stuck with %d to send" % len(pending)
    return guard


def test_round_trip_mtu_23_and_247():
    for mtu in (ATT_MTU_MIN, 247):
        air = Air(mtu)
        msgs = [_msg(i, n) for i, n in enumerate((1, 15, 16, 17, 300, MESSAGE_MAX))]
        _send_all(air, msgs)
        air.run(5)
        assert air.got["b"] == msgs, "mtu %d" % mtu
        assert air.a.in_flight() == 0 and air.a.retransmits == 0
        for f in air.a.fragments_to_send():
            assert len(f) <= payload_max(mtu)


def test_fragment_count_at_mtu_23():
    a = BleLink(2, ATT_MTU_MIN)
    a.send(_msg(1, MESSAGE_MAX), 0)
    frags = a.fragments_to_send(FRAGMENTS_MAX, 0)
    chunk = payload_max(ATT_MTU_MIN) - HEADER
    assert len(frags) == (MESSAGE_MAX + chunk - 1) // chunk
    assert max(len(f) for f in frags) == payload_max(ATT_MTU_MIN)


def test_byte_at_a_time():
    # One-byte messages, and a long message whose fragments go one per turn.
    air = Air(ATT_MTU_MIN, per_turn=1)
    msgs = [bytes([i]) for i in range(40)] + [_msg(3, 700)]
    _send_all(air, msgs)
    air.run(200)
    assert air.got["b"] == msgs


def test_loss_reorder_duplicates():
    cases = ((ATT_MTU_MIN, 100, 0, False), (ATT_MTU_MIN, 0, 0, True), (247, 0, 300, True),
             (ATT_MTU_MIN, 50, 100, True), (247, 200, 50, True))
    count = 20
    for mtu, loss, dup, reorder in cases:
        air = Air(mtu, loss=loss, dup=dup, reorder=reorder, seed=mtu + loss)
        msgs = [_msg(i, 1 + (i * 97) % 900) for i in range(count)]
        _send_all(air, msgs)
        air.run(400)
        assert air.got["b"] == msgs, "mtu %d loss %d dup %d reorder %s" % (mtu, loss, dup, reorder)
        assert air.a.failed is None and air.b.failed is None
        if loss:
            assert air.a.retransmits > 0


def test_both_directions_at_once_with_loss():
    air = Air(ATT_MTU_MIN, loss=100, seed=5)
    ma = [_msg(i, 200) for i in range(6)]
    mb = [_msg(i + 50, 90) for i in range(6)]
    for _ in range(3000):
        if ma and air.a.can_send():
            air.a.send(ma[0], air.now)
            ma.pop(0)
        if mb and air.b.can_send():
            air.b.send(mb[0], air.now)
            mb.pop(0)
        air.turn()
        if not ma and not mb and not air.a.in_flight() and not air.b.in_flight():
            break
    assert air.got["b"] == [_msg(i, 200) for i in range(6)]
    assert air.got["a"] == [_msg(i + 50, 90) for i in range(6)]


def test_mtu_grows_mid_message():
    air = Air(ATT_MTU_MIN, per_turn=3)
    air.a.send(_msg(1, 500), air.now)
    air.turn()
    air.a.set_mtu(247)
    air.b.set_mtu(247)
    air.a.send(_msg(2, 500), air.now)
    air.run(100)
    assert air.got["b"] == [_msg(1, 500), _msg(2, 500)]
    e = raises(BleLocalError, air.a.set_mtu, 100)
    assert e.code == "ble_mtu"


def test_oversize_and_truncated_fragments_are_typed_and_dropped():
    b = BleLink(2, ATT_MTU_MIN)
    bad = (
        (bytes([KIND_DATA, 0, 0, 0]) + b"x" * payload_max(ATT_MTU_MIN), "ble_fragment_too_long"),
        (b"", "ble_fragment_truncated"),
        (b"\x01", "ble_fragment_truncated"),
        (bytes([KIND_DATA, 0, 0, 0]), "ble_fragment_truncated"),
        (bytes([9, 0, 0, 0, 1]), "ble_fragment_kind"),
        (bytes([KIND_DATA, 0, 3, 1, 1]), "ble_fragment_index"),
        (bytes([KIND_DATA, 100, 0, 0, 1]), "ble_seq_window"),
        (bytes([2, 0]), "ble_credit"),
        (bytes([2, WINDOW_MAX + 1, 0]), "ble_credit"),
    )
    for frag, code in bad:
        e = raises(BleRemoteError, b.receive, frag, 0)
        assert e.code == code, (frag, e.code)
    b.receive(bytes([KIND_DATA, 0, 0, 2]) + b"ab", 0)
    e = raises(BleRemoteError, b.receive, bytes([KIND_DATA, 0, 1, 1]) + b"cd", 0)
    assert e.code == "ble_fragment_mismatch"
    assert b.messages() == [] and b.failed is None
    # ... and a good message still goes through afterwards.
    b.receive(bytes([KIND_DATA, 0, 1, 2]) + b"cd", 0)
    b.receive(bytes([KIND_DATA, 0, 2, 2]) + b"e", 0)
    assert b.messages() == [b"abcde"]


def test_message_longer_than_max_is_refused_both_ways():
    a = BleLink(2, 247)
    assert raises(BleLocalError, a.send, b"x" * (MESSAGE_MAX + 1), 0).code == "ble_message_length"
    assert raises(BleLocalError, a.send, b"", 0).code == "ble_message_length"
    b = BleLink(2, 247)
    chunk = payload_max(247) - HEADER
    last = MESSAGE_MAX // chunk + 1
    codes = []
    for i in range(last + 1):
        try:
            b.receive(bytes([KIND_DATA, 0, i, last]) + b"y" * chunk, 0)
        except BleRemoteError as e:
            codes.append(e.code)
            break
    assert codes == ["ble_message_too_long"]
    assert b.held() <= MESSAGE_MAX


def test_fragment_storm_keeps_memory_bounded_then_fails():
    b = BleLink(2, 247)
    chunk = payload_max(247) - HEADER
    rng = Rng(9)
    high = 0
    errors = 0
    for i in range(3000):
        seq = rng.randbelow(256)
        last = rng.randbelow(256)
        idx = rng.randbelow(last + 1)
        try:
            b.receive(bytes([KIND_DATA, seq, idx, last]) + b"z" * chunk, i)
        except BleRemoteError:
            errors += 1
        high = max(high, b.held())
        if b.failed is not None:
            break
    assert high <= 2 * MESSAGE_MAX, high
    assert b.failed == "ble_bad_fragments" and errors == BAD_FRAGMENTS_MAX
    # A failed link takes nothing more.
    b.receive(bytes([KIND_DATA, 0, 0, 0]) + b"q", 0)
    assert b.messages() == [] and b.held() == 0


def test_peer_that_never_acks():
    a = BleLink(2, ATT_MTU_MIN)
    now = 0
    sent = 0
    refused = 0
    high = 0
    for i in range(200):
        now = clock.add(now, 500)
        try:
            a.send(_msg(i, 400), now)
            sent += 1
        except BleLocalError as e:
            assert e.code in ("ble_queue_full", "ble_failed"), e.code
            refused += 1
        a.poll(now)
        a.fragments_to_send(FRAGMENTS_MAX, now)   # into the void
        high = max(high, a.held())
        if a.failed:
            break
    assert a.failed == "ble_no_ack"
    assert sent <= 2 + QUEUE_MAX and refused > 0
    assert high <= (2 + QUEUE_MAX) * 400
    assert a.retransmits >= RETRIES_MAX and a.held() == 0
    assert raises(BleLocalError, a.send, b"x", now).code == "ble_failed"


def test_retransmit_timer_across_tick_wrap():
    diff, add = clock.diff, clock.add
    try:
        clock.use(*clock.wrapping(clock.BOARD_PERIOD))
        air = Air(ATT_MTU_MIN, loss=300, seed=3)
        air.now = clock.BOARD_PERIOD - 3000
        msgs = [_msg(i, 120) for i in range(5)]
        _send_all(air, msgs)
        air.run(300)
        assert air.got["b"] == msgs and air.a.retransmits > 0
    finally:
        clock.use(diff, add)


def test_window_and_credit_limit_in_flight():
    a = BleLink(4, ATT_MTU_MIN)
    b = BleLink(2, ATT_MTU_MIN)
    for i in range(6):
        a.send(_msg(i, 10), 0)
    # Before b's first ack a assumes the minimum credit.
    seqs = set(f[1] for f in a.fragments_to_send(FRAGMENTS_MAX, 0))
    assert seqs == {0, 1}
    for f in [bytes([KIND_DATA, 0, 0, 0]) + _msg(0, 10)]:
        b.receive(f, 0)
    for f in b.fragments_to_send(FRAGMENTS_MAX, 0):
        a.receive(f, 0)
    seqs = set(f[1] for f in a.fragments_to_send(FRAGMENTS_MAX, 0))
    assert seqs == {2}   # credit 2 from b: seqs 1 (unacked) and 2


def test_advert_round_trip_and_bad_input():
    from shared_protocol.ble import adv
    data = adv.advert(b"\x10\x20\x30\x40" + b"\x00" * 28)
    assert len(data) <= adv.ADV_MAX
    assert adv.short_id(data) == b"\x10\x20\x30\x40"
    assert adv.short_id(data + b"\x00\x00") == b"\x10\x20\x30\x40"   # zero padding
    # Another vendor's advertisement: not ours.
    assert adv.short_id(bytes((2, 1, 6, 3, 3, 0x0F, 0x18))) is None
    e = raises(BleRemoteError, adv.short_id, data[:-1])
    assert e.code == "ble_adv_truncated"
    assert raises(BleRemoteError, adv.short_id, data + b"\x01" * 8).code == "ble_adv_length"
    for cut in range(len(data)):
        try:
            adv.short_id(data[:cut])
        except BleRemoteError:
            pass
