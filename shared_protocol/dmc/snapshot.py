"""Joining a snapshot into a replica (dmc/replica.py): a peer's, when the
LAN's anti-entropy finds it lacks operations the peer has compacted away
(dmc/sync.py), or the stored one when a replica is loaded from flash
(dmc/store.py). A node does either rarely, so the code lives here and is
imported when needed (``Replica.merge_snapshot_value`` and
``Replica.restore_bytes``); a board drops it once it has booted
(firmware/runtime.py, BOOT_ONLY).

Checks everything before changing anything: a bad snapshot is a
SnapshotError and the replica is left exactly as it was.
"""
from shared_protocol.wire import cbor
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import crdts
from shared_protocol.dmc import errors
from shared_protocol.dmc.errors import MALFORMED, UNKNOWN_TYPE, AUTHORS_FULL, OBJECTS_FULL
from shared_protocol.dmc.replica import OBJECTS_MAX, _vv_from


def merge(replica, v):
    """Join snapshot value ``v`` ([vv, clock, objects]) into ``replica``."""
    if not isinstance(v, list) or len(v) != 3:
        raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot must be [vv, clock, objects]")
    ovv, clock = _head(replica, v[0], v[1])
    objs = v[2]
    if not isinstance(objs, list) or len(objs) > OBJECTS_MAX:
        raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot objects must be a list of at most %d" % OBJECTS_MAX)
    theirs = {}
    prev = None
    intern = replica._ids.get
    for ob in objs:
        if not isinstance(ob, list) or len(ob) != 3:
            raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot object must be [type, name, state]")
        cls, prev = _key(ob[0], ob[1], prev)
        theirs[prev] = cls.from_value(ob[2], replica.cfg, lambda a: intern(a, a), ovv)
    _join(replica, theirs, ovv, clock)


def _head(replica, vv, clock):
    """(version vector, clock) of a snapshot, checked against the replica."""
    ovv = _vv_from(vv, "SnapshotError")
    if not O.is_int(clock) or clock < 0 or clock > O.CLOCK_MAX:
        raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot clock must be an int in 0..%d" % O.CLOCK_MAX)
    n = len(replica.vv)
    for a in ovv:
        if a not in replica.vv:
            n += 1
    if n > O.AUTHORS_MAX:
        raise errors.SnapshotError(AUTHORS_FULL, __debug__ and "snapshot brings the topic past %d authors" % O.AUTHORS_MAX)
    return ovv, clock


def _key(t, name, prev):
    """(class, key) of a snapshot object, keys in strictly rising order."""
    cls = crdts.cls(t) if O.is_int(t) else None
    if cls is None:
        raise errors.SnapshotError(UNKNOWN_TYPE, __debug__ and "unknown data type %r in snapshot" % (t,))
    key = (t, O.check_name(name, "SnapshotError"))
    if prev is not None and not (key > prev):
        raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot objects out of order")
    return cls, key


def _join(replica, theirs, ovv, clock):
    keys = list(replica.objects)
    for k in theirs:
        if k not in replica.objects:
            keys.append(k)
    if len(keys) > OBJECTS_MAX:
        raise errors.SnapshotError(OBJECTS_FULL, __debug__ and "snapshot brings the topic past %d objects" % OBJECTS_MAX)
    # Checked: from here on nothing can fail.
    fresh = not replica.vv
    for k in keys:
        mine = replica.objects.get(k)
        other = theirs.get(k)
        if mine is None and fresh:
            # nothing applied yet (a replica loaded from flash): joined
            # into an empty state and an empty version vector, theirs
            # is the result, without a copy of a full log in between
            replica.objects[k] = other
            continue
        if mine is None:
            mine = replica.objects[k] = crdts.new(k[0], replica.cfg)
        if other is None:
            other = crdts.new(k[0], replica.cfg)
        mine.join(other, replica.vv, ovv)
    jumped = {}
    for a in ovv:
        if a not in replica._ids:
            replica._ids[a] = a
        if ovv[a] > replica.vv.get(a, 0):
            a = replica._ids[a]
            replica.vv[a] = ovv[a]
            # ops up to ovv[a] were not all seen as ops: the tail of this
            # author restarts after the snapshot
            replica.snap_vv[a] = ovv[a]
            jumped[a] = 1
    if clock > replica.clock:
        replica.clock = clock
    if jumped:
        replica.tail = [d for d in replica.tail if O.author_seq(d)[0] not in jumped]
    replica._drain()


def restore_bytes(cls, data):
    """A replica of class ``cls`` rebuilt from the encoding of
    Replica.dump_value(), read an item at a time (cbor.Reader): a log's
    readings go into its columns one by one, never all decoded at once.
    DecodeError or SnapshotError if the bytes are not such a replica."""
    bad = "stored replica must be [1, author, cfg, snapshot, snap_vv, tail]"
    rd = cbor.Reader(data)
    if rd.array(0) != 6 or rd.item(1) != 1:
        raise errors.SnapshotError(MALFORMED, bad)
    author = rd.item(1)
    cfg = rd.item(1)
    if not isinstance(cfg, list) or len(cfg) != 3:
        raise errors.SnapshotError(MALFORMED, __debug__ and "stored config must be [log_keep, log_age, tail_max]")
    try:
        r = cls(author, cfg[0], cfg[1], cfg[2])
    except errors.ReplicaLimitError as e:
        raise errors.SnapshotError(MALFORMED, __debug__ and "stored config: " + e.message)
    if rd.array(1) != 3:
        raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot must be [vv, clock, objects]")
    vv = rd.item(2)
    ovv, clock = _head(r, vv, rd.item(2))
    n = rd.array(2)
    if n > OBJECTS_MAX:
        raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot objects must be a list of at most %d" % OBJECTS_MAX)
    theirs = {}
    prev = None
    intern = r._ids.get
    for _ in range(n):
        if rd.array(3) != 3:
            raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot object must be [type, name, state]")
        t = rd.item(4)
        kcls, prev = _key(t, rd.item(4), prev)
        if t == O.T_LOG:
            m = rd.array(4)
            theirs[prev] = kcls.from_rows(_rows(rd, m), m, r.cfg, lambda a: intern(a, a), ovv)
        else:
            theirs[prev] = kcls.from_value(rd.item(4), r.cfg, lambda a: intern(a, a), ovv)
    _join(r, theirs, ovv, clock)
    snap = _vv_from(rd.item(1), "SnapshotError")
    tail = rd.item(1)
    rd.end()
    if not isinstance(tail, list) or len(tail) > r.tail_max:
        raise errors.SnapshotError(MALFORMED, __debug__ and "stored tail must be a list of at most %d ops" % r.tail_max)
    nxt = {}
    for a in snap:
        if snap[a] > r.vv.get(a, 0):
            raise errors.SnapshotError(MALFORMED, __debug__ and "stored snap_vv beyond the state's version vector")
        nxt[a] = snap[a] + 1
    entries = []
    for data in tail:
        if not isinstance(data, bytes):
            raise errors.SnapshotError(MALFORMED, __debug__ and "stored tail op must be bytes")
        try:
            op = O.decode(data)
        except errors.OpError as e:
            raise errors.SnapshotError(MALFORMED, __debug__ and "stored tail op: " + e.message)
        a = op[0]
        if op[1] != nxt.get(a, 1) or op[1] > r.vv.get(a, 0):
            raise errors.SnapshotError(MALFORMED, __debug__ and "stored tail ops are not contiguous per author")
        nxt[a] = op[1] + 1
        entries.append(data)
    for a in r.vv:
        if nxt.get(a, 1) != r.vv[a] + 1:
            raise errors.SnapshotError(MALFORMED, __debug__ and "stored tail does not reach the version vector")
    r.snap_vv = {}
    for a in snap:
        r.snap_vv[r._ids.get(a, a)] = snap[a]
    r.tail = entries
    return r


def _rows(rd, m):
    # a log's readings, decoded one at a time as the log takes them
    for _ in range(m):
        yield rd.item(5)
