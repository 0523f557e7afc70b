# Runs on CPython and in the MicroPython VM: anti-entropy between replicas.
import hashlib

from rig import raises, load_vectors, IS_MICROPYTHON
from shared_protocol.wire import cbor, envelope
from shared_protocol.wire.framing import DATAGRAM_MAX
from shared_protocol.rand import Rng
from shared_protocol.dmc import Replica, Sync, SyncError
from shared_protocol.dmc import sync as S
from shared_protocol.dmc import replica as R

ALICE = b"alice-sensor-001"
BOB = b"bob-gateway-0002"
CAROL = b"carol-phone-0003"


def exchange(x, y, rng=None, loss=0, now=0):
    """Run anti-entropy between x and y to quiescence over a datagram link
    that (with rng) reorders and loses loss% of the datagrams. Returns the
    bytes and datagrams sent."""
    sx = Sync(x, y.author, 7)
    sy = Sync(y, x.author, 7)
    q = [(sy, sx, m) for m in sx.start(now)]
    sent = 0
    msgs = 0
    rounds = 0
    while True:
        while q:
            i = rng.randbelow(len(q)) if rng is not None else 0
            dst, src, m = q.pop(i)
            assert 0 < len(m) <= DATAGRAM_MAX, len(m)
            sent += len(m)
            msgs += 1
            if rng is not None and loss and rng.randbelow(100) < loss:
                continue
            for r in dst.receive(m, now):
                q.append((src, dst, r))
        now += S.RETRY_MS
        for s, o in ((sx, sy), (sy, sx)):
            for m in s.poll(now):
                q.append((o, s, m))
        if not q:
            return sent, msgs
        rounds += 1
        assert rounds < 60, "sync did not settle"


def _deliver(ops, *targets):
    for t in targets:
        for o in ops:
            t.receive(o)


def scenario():
    """Fixed partition-and-heal with three replicas (a sensor, a gateway, a
    phone). Returns the three replicas after healing."""
    a = Replica(ALICE, 50, 3600)
    b = Replica(BOB, 50, 3600)
    c = Replica(CAROL, 50, 3600)
    start = [a.put("cfg", "rate", 60), a.put("cfg", "unit", "C"),
             a.insert("tags", "roof"), a.add("boots", 1)]
    _deliver(start, b, c)
    # partition {a} | {b, c}: a logs for a while
    for i in range(40):
        a.append("temp", 1000 + 60 * i, 15 + i * 0.5)
    a.put("cfg", "rate", 30)
    a.remove("tags", "roof")
    a.insert("tags", "north")
    a.add("boots", 1)
    ob = [b.put("cfg", "rate", 120), b.insert("tags", "roof"), b.add("boots", 2)]
    for i in range(10):
        ob.append(b.append("temp", 1000 + 90 * i, -i))
    # c gets b's ops reordered and duplicated
    _deliver(list(reversed(ob)) + ob[:3], c)
    oc = [c.put("cfg", "unit", "K"), c.add("boots", -1), c.insert("tags", "shade"),
          c.put("cfg", "note", b"\x00\xff")]
    _deliver(oc, b)
    # b and c fold what both have seen: a, returning, needs a snapshot
    b.note_peer(CAROL, dict(c.vv))
    c.note_peer(BOB, dict(b.vv))
    assert b.compact() > 0 and c.compact() > 0
    # heal over a lossy, reordering link
    rng = Rng(2026)
    exchange(a, b, rng, 20)
    exchange(b, c, rng, 20)
    exchange(a, c, rng, 20)
    return a, b, c


def test_partition_and_heal_same_bytes_on_both_interpreters():
    a, b, c = scenario()
    s = a.state_bytes()
    assert b.state_bytes() == s and c.state_bytes() == s
    assert a.members("tags") == ["roof", "north", "shade"]  # add wins over a's remove
    assert a.counter("boots") == 3
    assert a.get("cfg", "rate") == 30 and a.get("cfg", "unit") == "K"
    assert len(a.readings("temp")) == 50  # keep 50 of 50 readings
    digest = hashlib.sha256(s).digest().hex()
    print("dmc scenario state sha256", digest, len(s))
    vec = load_vectors("dmc_scenario.json")
    assert digest == vec["state_sha256"], (digest, vec["state_sha256"])
    assert len(s) == vec["state_len"]


def _diverged(k):
    a = Replica(ALICE)
    b = Replica(BOB)
    base = []
    for i in range(10):
        base.append(a.put("cfg", "k%d" % i, i))
    _deliver(base, b)
    missing = 0
    for i in range(k):
        missing += len(a.append("temp", 5000 + i, i))
        missing += len(b.add("n", 1) if i % 2 else b.put("cfg", "k%d" % (i % 10), -i))
    return a, b, missing


def test_sync_bytes_grow_with_the_difference():
    for k in (10, 100):
        a, b, missing = _diverged(k)
        summary = len(Sync(a).summary(S.WANT)[0]) + len(Sync(b).summary()[0])
        sent, msgs = exchange(a, b)
        assert a.state_bytes() == b.state_bytes()
        assert sent <= 1.5 * missing + summary, (k, sent, missing, summary)
        print("k=%d missing=%d sent=%d summaries=%d datagrams=%d" % (k, missing, sent, summary, msgs))


def test_in_sync_replicas_exchange_only_summaries():
    a, b, _ = _diverged(5)
    exchange(a, b)
    sent, msgs = exchange(a, b)
    assert msgs == 2 and sent < 120, (msgs, sent)


def test_lossy_reordering_link_converges():
    n = 60 if IS_MICROPYTHON else 200
    for seed in (1, 2, 3):
        a, b, _ = _diverged(n)
        exchange(a, b, Rng(seed), 35)
        assert a.state_bytes() == b.state_bytes(), seed


def test_burst_limit_resumes():
    a = Replica(ALICE)
    b = Replica(BOB)
    # ~180-byte ops, all in the tail: more datagrams than one burst holds
    for i in range(R.TAIL_MAX):
        a.put("m", "k%d" % (i % 40), b"\x00" * 160)
    assert a.snap_vv == {}
    sent, msgs = exchange(a, b)
    assert b.state_bytes() == a.state_bytes()
    assert msgs > S.BURST_MAX + 2, msgs


def test_returning_replica_gets_snapshot_then_tail():
    a = Replica(ALICE)
    b = Replica(BOB)
    for i in range(30):
        a.append("temp", i, i)
    a.note_peer(BOB, {ALICE: 30})  # e.g. the proxy acknowledged these
    a.compact()
    assert a.tail == []
    for i in range(5):
        a.insert("s", i)
    exchange(a, b, Rng(9), 10)
    assert b.state_bytes() == a.state_bytes()
    # after the snapshot, a is b's source of new operations as usual
    a.add("c", 1)
    sent, msgs = exchange(a, b)
    assert b.counter("c") == 1 and sent < 200


def test_messages_are_envelopes_in_the_dmc_block():
    lo, hi = envelope.TYPE_BLOCKS["dmc"]
    for t in (S.OP, S.SUMMARY, S.OPS, S.SNAP):
        assert lo <= t[0] <= hi
    a = Replica(ALICE)
    o = a.add("c", 1)
    m = envelope.REGISTRY.decode(S.live_op(o))
    assert m.name == "dmc_op" and cbor.encode(m["op"]) == o
    # a live op through Sync.receive applies too
    b = Replica(BOB)
    Sync(b).receive(S.live_op(o), 0)
    assert b.counter("c") == 1


def test_bad_sync_messages_are_typed_and_change_nothing():
    a = Replica(ALICE)
    a.add("c", 1)
    s = Sync(a)
    before = a.state_bytes()
    bad = [
        envelope.REGISTRY.encode("dmc_summary", 1, 0, 0, 1, [ALICE], []),
        envelope.REGISTRY.encode("dmc_summary", 1, 0, 0, 1, [ALICE, 0], []),
        envelope.REGISTRY.encode("dmc_summary", 1, 0, 0, 1, [BOB, 1, ALICE, 1], []),
        envelope.REGISTRY.encode("dmc_summary", 1, 0, 0, 1, [], [b"x", 1]),
        envelope.REGISTRY.encode("dmc_snap", 1, b"12345678", 3, 2, b"x"),
        envelope.REGISTRY.encode("ping", 5),
    ]
    for m in bad:
        raises(SyncError, s.receive, m, 0)
        assert a.state_bytes() == before
    # a snapshot whose bytes do not match its id
    e = raises(SyncError, s.receive, envelope.REGISTRY.encode("dmc_snap", 1, b"12345678", 0, 1, b"\x83\x80\x00\x80"), 0)
    assert a.state_bytes() == before
    # malformed ops inside dmc_ops are counted, not applied
    s.receive(envelope.REGISTRY.encode("dmc_ops", 1, 0, [[1, 2, 3]]), 0)
    assert s.rejected == 1 and a.state_bytes() == before


def test_limits_written_out_agree_with_their_modules():
    # sync.py writes other modules' limits out as const() (constant field
    # specs, no framing.py on a board): they must agree
    from shared_protocol.dmc import ops as O
    assert S.SUMMARY_PARTS_MAX == (O.AUTHORS_MAX + S.SUMMARY_AUTHORS - 1) // S.SUMMARY_AUTHORS
    assert S.CHUNKS_MAX == (R.SNAPSHOT_MAX + S.CHUNK - 1) // S.CHUNK
    if not IS_MICROPYTHON:   # private consts are folded away on MicroPython
        assert S._DATAGRAM == DATAGRAM_MAX and S._AUTHORS == O.AUTHORS_MAX and S._SNAPSHOT == R.SNAPSHOT_MAX
