# Runs on CPython and in the MicroPython VM: the DMC replica and its types.
import struct

from rig import raises, IS_MICROPYTHON, SINGLE_FLOAT, unhex
from shared_protocol.wire import cbor
from shared_protocol.dmc import Replica, OpError, SnapshotError, ReplicaLimitError
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import replica as R
from shared_protocol.dmc import errors as E

A = b"\x0a" * 16
B = b"\x0b" * 16
C = b"\x0c" * 32


def _pair():
    return Replica(A), Replica(B)


def test_local_writes_read_back():
    r = Replica(A)
    r.put("cfg", "rate", 10)
    r.put("cfg", "unit", "C")
    r.add("boots", 3)
    r.add("boots", -1)
    r.insert("tags", "roof")
    r.insert("tags", 7)
    r.append("temp", 100, 21.5)
    assert r.get("cfg", "rate") == 10
    assert r.items("cfg") == [("rate", 10), ("unit", "C")]
    assert r.counter("boots") == 2
    assert r.members("tags") == [7, "roof"]  # ordered by encoding: int before text
    assert r.readings("temp") == [(100, 21.5)]
    r.put("cfg", "unit", None)
    assert r.items("cfg") == [("rate", 10)]
    assert r.vv == {A: 8}


def test_ops_replay_to_same_bytes_in_any_causal_order():
    a, b = _pair()
    ops = [a.put("m", "k", 1), a.add("c", 5), a.insert("s", "x"), a.append("l", 5, 1)]
    for o in reversed(ops):
        b.receive(o)
    assert b.state_bytes() == a.state_bytes()
    assert b.pending == []


def test_duplicates_are_idempotent():
    a, b = _pair()
    o = a.add("c", 2)
    assert b.receive(o) == R.APPLIED
    assert b.receive(o) == R.DUPLICATE
    assert b.counter("c") == 2
    o2 = a.add("c", 2)
    o3 = a.add("c", 2)
    assert b.receive(o3) == R.BUFFERED
    assert b.receive(o3) == R.DUPLICATE
    assert b.receive(o2) == R.APPLIED
    assert b.counter("c") == 6


def test_lww_concurrent_writes_tie_break_by_author():
    a, b = _pair()
    oa = a.put("m", "k", "from-a")
    ob = b.put("m", "k", "from-b")
    a.receive(ob)
    b.receive(oa)
    # same Lamport clock (1): the larger author id wins on both
    assert a.get("m", "k") == b.get("m", "k") == "from-b"
    assert a.state_bytes() == b.state_bytes()


def test_lww_causally_later_write_wins():
    a, b = _pair()
    b.receive(a.put("m", "k", 1))
    ob = b.put("m", "k", 2)  # b saw a's write: clock 2
    a.receive(ob)
    oa = a.put("m", "k", 3)  # a saw b's: clock 3
    b.receive(oa)
    assert a.get("m", "k") == b.get("m", "k") == 3


def test_counter_merges_concurrent_increments():
    a, b = _pair()
    x = [a.add("c", 5), a.add("c", -2)]
    y = [b.add("c", 10)]
    for o in y:
        a.receive(o)
    for o in x:
        b.receive(o)
    assert a.counter("c") == b.counter("c") == 13


def test_orset_add_wins_over_concurrent_remove():
    a, b = _pair()
    b.receive(a.insert("s", "x"))
    rm = b.remove("s", "x")         # b removes what it saw
    add = a.insert("s", "x")        # a re-adds concurrently
    a.receive(rm)
    b.receive(add)
    assert a.members("s") == b.members("s") == ["x"]
    rm2 = a.remove("s", "x")        # a now removes everything it saw
    b.receive(rm2)
    assert a.members("s") == b.members("s") == []
    assert a.state_bytes() == b.state_bytes()
    assert a.remove("s", "missing") is None


def test_log_keeps_order_and_retention():
    a = Replica(A, log_keep=5, log_age=100)
    b = Replica(B, log_keep=5, log_age=100)
    oa = [a.append("t", t, t) for t in (10, 30, 50)]
    ob = [b.append("t", t, -t) for t in (20, 30, 40)]
    for o in ob:
        a.receive(o)
    for o in oa:
        b.receive(o)
    got = a.readings("t")
    assert got == b.readings("t")
    # 6 readings, keep 5: 10 goes; 30 appears twice, ordered by author
    assert got == [(20, -20), (30, 30), (30, -30), (40, -40), (50, 50)], got
    a.receive(b.append("t", 200, 0))  # age 100 before the newest drops < 100
    assert a.readings("t") == [(200, 0)]
    assert a.state_bytes() != b.state_bytes() or a.readings("t") == b.readings("t")


def test_log_values_of_every_kind_in_any_arrival_order_read_back_and_encode_alike():
    # Three authors write out of time order, so readings land in the middle
    # of the log as well as at its end, and retention cuts from the front.
    vals = [21.5, -3, None, "ok", b"\x00\xff", [1, [2.25, "x"]], {"k": 1}, True, 2 ** 40, -0.5, 0.1]
    ws = [Replica(bytes([w]) * 8, log_keep=20) for w in (1, 2, 3)]
    ops = []
    for i in range(36):
        w = ws[i % 3]
        ops.append(w.append("l", 1000 + (i * 7) % 23, vals[i % len(vals)]))
    x = Replica(A, log_keep=20)
    y = Replica(B, log_keep=20)
    for o in ops:
        x.receive(o)
    for k in (0, 1, 2):                 # another causal order: author by author
        for o in ops[k::3]:
            y.receive(o)
    assert x.state_bytes() == y.state_bytes()
    got = x.readings("l")
    assert got == y.readings("l") and len(got) == 20
    # the 20 kept are the 20 latest by (time, author, seq), values decoded as written
    want = []
    for i in range(36):
        want.append((1000 + (i * 7) % 23, bytes([(i % 3) + 1]) * 8, i // 3 + 1, vals[i % len(vals)]))
    want.sort(key=lambda e: (e[0], e[1], e[2]))
    assert [(e[0], e[3]) for e in want[-20:]] == got
    ents = x.obj(O.T_LOG, "l").entries()
    assert [e[:3] for e in ents] == [e[:3] for e in want[-20:]]
    # the state decodes to the same rows, and a replica rebuilt from it
    # (a snapshot joined into an empty one) encodes to the same bytes
    v = cbor.decode(x.state_bytes())
    assert [r[3] for r in v[2][0][2]] == [e[1] for e in got]
    z = Replica(C, log_keep=20)
    z.merge_snapshot(x.snapshot())
    assert z.state_bytes() == x.state_bytes() and z.readings("l") == got


def test_a_lower_log_keep_cuts_to_the_newest_readings_and_holds_from_then_on():
    # A board lowering the retention a stored replica was saved with
    # (firmware/topic.py LOG_KEEP): it keeps the newest readings, as a
    # replica made with that bound and fed the same ops does.
    w = Replica(C, log_keep=20)
    ops = [w.append("l", 1000 + i, 20.0 + i) for i in range(30)]
    x = Replica(A, log_keep=20)
    y = Replica(B, log_keep=8)
    for o in ops:
        x.receive(o)
        y.receive(o)
    assert len(x.readings("l")) == 20
    assert x.set_log_keep(8) is True and x.cfg == (8, 0)
    assert x.readings("l") == y.readings("l") == [(1000 + i, 20.0 + i) for i in range(22, 30)]
    assert x.obj(O.T_LOG, "l").entries() == y.obj(O.T_LOG, "l").entries()
    assert x.set_log_keep(8) is False
    more = [w.append("l", 2000 + i, float(i)) for i in range(5)]
    for o in more:
        x.receive(o)
        y.receive(o)
    assert x.readings("l") == y.readings("l") and len(x.readings("l")) == 8
    # stored and restored with the new bound
    z = Replica.restore_bytes(cbor.encode(x.dump_value()))
    assert z.cfg == (8, 0) and z.readings("l") == x.readings("l")
    # a bad bound is refused and changes nothing
    for bad in (0, 513, "8", None):
        raises(ReplicaLimitError, x.set_log_keep, bad)
    assert x.cfg == (8, 0) and len(x.readings("l")) == 8
    # raised again: the log takes the next readings up to the new bound
    assert x.set_log_keep(12) is True
    for i in range(6):
        x.receive(w.append("l", 3000 + i, 1.5))
    assert len(x.readings("l")) == 12 and x.readings("l")[-1] == (3005, 1.5)


def test_log_join_keeps_the_union_s_newest_readings_as_a_list_join_would():
    # TimeLog.join merges the two column stores a reading at a time; the
    # reference here is the plain definition: the union of both logs'
    # entries, sorted, cut by keep and age.
    from shared_protocol.dmc.crdt_log import TimeLog
    ws = [bytes([w]) * 8 for w in (1, 2, 3)]
    cases = 0
    for keep, age in ((5, 0), (8, 0), (64, 0), (8, 30), (64, 12)):
        for split in (0, 3, 7, 11):
            rows = []
            for i in range(24):
                rows.append((1000 + (i * 11) % 37, ws[i % 3], i // 3 + 1, cbor.encode(float(i) / 4)))
            rows.sort(key=lambda r: (r[0], r[1], r[2]))
            # two logs that overlap: a the rows up to split+8, b from split
            a = TimeLog(64, 0)
            b = TimeLog(64, 0)
            for r in rows[:split + 8]:
                a._insert(r[0], r[1], r[2], r[3])
            for r in rows[split:]:
                b._insert(r[0], r[1], r[2], r[3])
            a.keep, a.age = keep, age
            a._trim()
            want = sorted(set(a.entries()) | set(b.entries()), key=lambda e: (e[0], e[1], e[2]))
            if want:
                cutoff = want[-1][0] - age if age else None
                drop = max(len(want) - keep, 0)
                while cutoff is not None and drop < len(want) and want[drop][0] < cutoff:
                    drop += 1
                want = want[drop:]
            before = a.entries()
            a.join(b, {}, {})
            got = a.entries()
            assert got == want, (keep, age, split, before, got, want)
            # and again: nothing new, nothing changes
            a.join(b, {}, {})
            assert a.entries() == got
            cases += 1
    assert cases == 20
    # an empty log joins a full one and the other way round
    e = TimeLog(4, 0)
    f = TimeLog(4, 0)
    for i in range(6):
        f._insert(100 + i, ws[0], i + 1, cbor.encode(i))
    f._trim()
    e.join(f, {}, {})
    assert e.entries() == f.entries() and len(e) == 4
    f.join(TimeLog(4, 0), {}, {})
    assert len(f) == 4


def test_encoding_independent_of_insertion_order():
    ops = []
    w = Replica(C)
    for i in range(12):
        ops.append(w.put("m", "k%d" % ((i * 7) % 12), i))
        ops.append(w.insert("s", "e%d" % ((i * 5) % 12)))
    x = Replica(A)
    y = Replica(B)
    for o in ops:
        x.receive(o)
    for o in reversed(ops):
        y.receive(o)
    assert x.state_bytes() == y.state_bytes() == w.state_bytes()
    v = cbor.decode(x.state_bytes())
    keys = [e[0] for e in v[2][0][2]]
    assert keys == sorted(keys)


def _state_and_pending(r):
    return (r.state_bytes(), len(r.pending), len(r.tail), dict(r.vv))


def test_bad_input_is_typed_and_changes_nothing():
    a = Replica(A)
    base = a.add("c", 1)
    b = Replica(B)
    b.receive(base)
    good = cbor.decode(a.add("c", 1))
    cases = [
        ("not cbor", b"\xff\x00", E.MALFORMED),
        ("not a list", cbor.encode({1: 2}), E.MALFORMED),
        ("oversize", b"\x00" * (O.OP_MAX + 1), E.OVERSIZE),
        ("short", cbor.encode(good[:5]), E.MALFORMED),
        ("unknown kind", cbor.encode(good[:4] + [99] + good[5:]), E.UNKNOWN_TYPE),
        ("bool seq", cbor.encode([A, True] + good[2:]), E.MALFORMED),
        ("zero seq", cbor.encode([A, 0] + good[2:]), E.MALFORMED),
        ("long author", cbor.encode([b"x" * 33] + good[1:]), E.MALFORMED),
        ("text author", cbor.encode(["a"] + good[1:]), E.MALFORMED),
        ("zero delta", cbor.encode(good[:6] + [0]), E.MALFORMED),
        ("extra arg", cbor.encode(good + [1]), E.MALFORMED),
        ("odd deps", cbor.encode(good[:3] + [[B]] + good[4:]), E.MALFORMED),
        ("self dep", cbor.encode(good[:3] + [[A, 1]] + good[4:]), E.MALFORMED),
        ("gap", cbor.encode([A, 2 + R.PENDING_MAX] + good[2:]), E.GAP),
        ("dep beyond", cbor.encode(good[:3] + [[C, R.PENDING_MAX + 1]] + good[4:]), E.DEP_BEYOND),
        ("long name", cbor.encode(good[:5] + ["n" * 33] + good[6:]), E.MALFORMED),
        ("float time", cbor.encode([A, 2, 2, [], O.K_APPEND, "l", 1.5, 0]), E.MALFORMED),
        ("bad elem", cbor.encode([A, 2, 2, [], O.K_INSERT, "s", [1], []]), E.MALFORMED),
        ("key not text", cbor.encode([A, 2, 2, [], O.K_PUT, "m", 5, 0]), E.MALFORMED),
    ]
    before = _state_and_pending(b)
    for name, data, code in cases:
        e = raises(OpError, b.receive, data)
        assert e.code == code, (name, e.code)
        assert _state_and_pending(b) == before, name


def test_a_lowered_buffer_bound_refuses_early_ops_past_it_and_drains_the_rest():
    a = Replica(A)
    ops = [a.append("l", 100 + i, i) for i in range(12)]
    b = Replica(B)
    b.pending_max = 4      # a board's (firmware/topic.py BOARD_PENDING)
    for o in ops[1:5]:
        assert b.receive(o) == R.BUFFERED
    before = _state_and_pending(b)
    e = raises(OpError, b.receive, ops[5])
    assert e.code == E.BUFFER_FULL and "4 early" in e.message
    assert _state_and_pending(b) == before
    assert b.receive(ops[0]) == R.APPLIED and b.pending == [] and len(b.readings("l")) == 5
    for o in ops[5:]:      # refused once, taken when it comes again in order
        assert b.receive(o) == R.APPLIED
    assert b.readings("l") == a.readings("l")


def test_buffer_bound_and_authors_bound():
    half = R.PENDING_MAX // 2
    a = Replica(A)
    c = Replica(C)
    oa = [a.add("c", 1) for _ in range(half + 2)]
    oc = [c.add("c", 1) for _ in range(half + 1)]
    b = Replica(B)
    for o in oa[1:half + 1] + oc[1:]:
        assert b.receive(o) == R.BUFFERED
    assert len(b.pending) == R.PENDING_MAX
    before = _state_and_pending(b)
    e = raises(OpError, b.receive, oa[half + 1])
    assert e.code == E.BUFFER_FULL
    assert _state_and_pending(b) == before
    assert b.receive(oa[0]) == R.APPLIED
    assert b.receive(oc[0]) == R.APPLIED
    assert b.counter("c") == 2 * half + 2 and b.pending == []
    # authors bound
    r = Replica(A)
    for i in range(O.AUTHORS_MAX):
        r.receive(Replica(bytes([i + 1]) * 4).add("c", 1))
    before = _state_and_pending(r)
    e = raises(OpError, r.receive, Replica(b"\xff" * 4).add("c", 1))
    assert e.code == E.AUTHORS_FULL
    assert _state_and_pending(r) == before


def test_local_limits_raise_local_errors():
    r = Replica(A)
    e = raises(ReplicaLimitError, r.put, "m", "k", b"x" * O.OP_MAX)
    assert e.code == E.OVERSIZE
    e = raises(ReplicaLimitError, r.put, "m", "k", object())
    e = raises(ReplicaLimitError, r.put, "", "k", 1)
    for i in range(R.OBJECTS_MAX):
        r.add("c%d" % i, 1)
    e = raises(ReplicaLimitError, r.add, "one-more", 1)
    assert e.code == E.OBJECTS_FULL
    assert r.vv[A] == R.OBJECTS_MAX
    raises(ReplicaLimitError, Replica, b"")
    raises(ReplicaLimitError, Replica, A, 0)


def test_snapshot_join_equals_op_replay():
    a, b = _pair()
    shared = [a.insert("s", "x"), a.insert("s", "y"), a.put("m", "k", 1)]
    for o in shared:
        b.receive(o)
    # concurrent: a removes x and re-logs; b removes y, adds z
    oa = [a.remove("s", "x"), a.append("l", 1, 1), a.add("c", 4), a.put("m", "k", 2)]
    ob = [b.remove("s", "y"), b.insert("s", "z"), b.add("c", -1), b.insert("s", "x")]
    via_ops = Replica(C)
    for o in shared + oa + ob:
        via_ops.receive(o)
    a2 = Replica(A)
    for o in shared + oa:
        a2.receive(o)
    a2.merge_snapshot(b.snapshot())   # a's state joined with b's whole state
    assert a2.members("s") == ["x", "z"]
    assert a2.vv == via_ops.vv
    assert a2.state_bytes() == via_ops.state_bytes()
    # and the other way round
    b.merge_snapshot(a.snapshot())
    assert b.state_bytes() == via_ops.state_bytes()
    # joining again changes nothing
    b.merge_snapshot(a.snapshot())
    assert b.state_bytes() == via_ops.state_bytes()


def test_bad_snapshot_is_typed_and_changes_nothing():
    a = Replica(A)
    a.insert("s", "x")
    a.append("l", 3, 1)
    b = Replica(B)
    b.add("c", 1)
    good = cbor.decode(a.snapshot())
    cases = [
        ("not cbor", b"\xff"),
        ("shape", cbor.encode([1, 2])),
        ("unknown type", cbor.encode([good[0], good[1], [[9, "x", []]]])),
        ("vv order", cbor.encode([[B, 1, A, 1], 1, []])),
        ("tag beyond vv", cbor.encode([good[0], good[1], [[O.T_SET, "s", [["x", [A, 9]]]]]])),
        ("objects order", cbor.encode([good[0], good[1], list(reversed(good[2]))])),
        ("oversize", b"\x00" * (R.SNAPSHOT_MAX + 1)),
    ]
    before = _state_and_pending(b)
    for name, data in cases:
        e = raises(SnapshotError, b.merge_snapshot, data)
        assert _state_and_pending(b) == before, name
    assert raises(SnapshotError, b.merge_snapshot, cases[2][1]).code == E.UNKNOWN_TYPE


def test_compaction_bounds_tail_and_keeps_state():
    a, b = _pair()
    for i in range(20):
        b.receive(a.append("l", i, i))
    s = a.state_bytes()
    a.note_peer(B, dict(b.vv))
    assert a.compact() == 20
    assert a.tail == [] and a.snap_vv == {A: 20}
    assert a.state_bytes() == s
    # a peer that lacks compacted ops needs a snapshot; one that has them, not
    assert a.needs_snapshot({}) and not a.needs_snapshot(b.vv)
    # tail never grows past TAIL_MAX
    w = Replica(C)
    n = R.TAIL_MAX + 10
    for i in range(n):
        w.add("c", 1)
    assert len(w.tail) == R.TAIL_MAX and w.snap_vv[C] == 10
    assert w.ops_since({C: 10})[0] == w.tail[0]


def test_a_lowered_tail_bound_folds_the_oldest_ops_and_keeps_the_state():
    a, b = _pair()
    for i in range(30):
        b.receive(a.append("l", i, i))
        a.receive(b.add("c", 1))
    s = a.state_bytes()
    assert len(a.tail) == 60
    newest = a.tail[-16:]
    assert a.limit_tail(16) and a.tail == newest and a.tail_max == 16
    assert a.state_bytes() == s
    assert a.snap_vv == {A: 22, B: 22}      # what the 44 oldest ops reached, per author
    assert a.needs_snapshot({A: 21, B: 30}) and not a.needs_snapshot({A: 22, B: 22})
    assert a.ops_since({A: 22, B: 22}) == newest
    assert not a.limit_tail(16)             # nothing to do twice
    b.receive(a.append("l", 99, 99))
    assert len(a.tail) == 16
    assert raises(ReplicaLimitError, a.limit_tail, 0).code == E.OVERSIZE
    assert a.tail_max == 16


def test_snapshot_join_drops_a_tag_the_sender_saw_removed():
    # b saw a's insert (a's latest op) and removed it; c saw only the insert.
    # Joining b's snapshot must drop the tag: b's vv covers it, b lacks it.
    a, b = _pair()
    c = Replica(C)
    ins = a.insert("s", "x")
    b.receive(ins)
    c.receive(ins)
    b.remove("s", "x")
    assert b.vv[A] == 1
    c.merge_snapshot(b.snapshot())
    assert c.members("s") == []
    assert c.state_bytes() == b.state_bytes()
    # and a concurrent insert that b never saw survives the same join
    d = Replica(C)
    d.receive(ins)
    d.insert("s", "x")
    d.merge_snapshot(b.snapshot())
    assert d.members("s") == ["x"]


# A reading a host wrote: author A's first op, append 23.4 at t=1763683201
# to the log "temp", as cbor2.dumps(op, canonical=True) writes it
# (tests/host/test_cbor_properties.py checks cbor2 still does). 23.4 is no
# single, so it travels as the double fb4037666666666666.
HOST_OP_23_4 = "88500a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a010180056474656d701a691fab81fb4037666666666666"


def test_a_float_written_by_the_host_reaches_a_single_precision_replica():
    """ESP32 and RP2 boards have single floats: the host's reading lands in
    their replica as their 23.4 (the double rounded to single)."""
    prev = None if SINGLE_FLOAT else cbor.set_single_floats(True)
    try:
        r = Replica(B)
        assert r.receive(unhex(HOST_OP_23_4)) == 1
        assert r.readings("temp") == [(1763683201, struct.unpack(">f", struct.pack(">f", 23.4))[0])]
        assert r.vv == {A: 1}
    finally:
        if prev is not None:
            cbor.set_single_floats(prev)
