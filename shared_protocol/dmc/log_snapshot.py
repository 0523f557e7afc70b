"""The snapshot side of a TimeLog (crdt_log.py): a log read back from a
stored or received snapshot, and the union of two logs. A board runs these
at boot (its stored replica) and when it joins a LAN peer's snapshot, not
every turn: loaded on first use, and dropped after boot with
dmc/snapshot.py (firmware/runtime.py BOOT_ONLY)."""
from shared_protocol.wire import cbor
from shared_protocol.dmc import ops as O
from shared_protocol.dmc.crdts import _bad, LOG_MAX
from shared_protocol.dmc.crdt_log import VALUE_MAX, TimeLog


def from_rows(cls, rows, n, cfg, intern, vv):
    """TimeLog.from_rows (cls: TimeLog)."""
    if n > LOG_MAX:
        raise _bad(__debug__ and "log state must be a list of at most %d readings" % LOG_MAX)
    lg = cls(cfg[0], cfg[1])
    prev = None
    for r in rows:
        if not isinstance(r, list) or len(r) != 4:
            raise _bad(__debug__ and "log reading must be [time, author, seq, value]")
        k = (O.check_time(r[0], "SnapshotError"), O.check_author(r[1], "SnapshotError"),
             O.check_seq(r[2], "seq", "SnapshotError"))
        if prev is not None and not (k > prev):
            raise _bad(__debug__ and "log readings out of order")
        prev = k
        if r[2] > vv.get(r[1], 0):
            raise _bad(__debug__ and "log reading beyond the version vector")
        enc = cbor.encode(r[3])
        if len(enc) > VALUE_MAX:
            raise _bad(__debug__ and "log value of %d bytes, over %d" % (len(enc), VALUE_MAX))
        # straight into the columns, no list of entries in between
        lg._push(r[0], intern(r[1]), r[2], enc)
        if len(lg) > lg.keep:
            lg._trim()   # never more than keep held while reading
    lg._trim()
    return lg


def join(log, other):
    """TimeLog.join: ``other``'s readings merged into ``log``, retention
    applied, in new columns."""
    # Both logs are in (t, author, seq) order and a reading's key
    # names it (an author's seq has one time), so the union is a merge
    # of the two column stores, a reading at a time: a board joining a
    # LAN peer's snapshot builds no list of either log (a 64-reading
    # log as tuples is some 8 KB, more than a frozen node has free).
    # Two walks: the first counts what the retention drops, the second
    # writes the rest into new columns (room for ``keep``).
    n = len(log.ts)
    m = len(other.ts)
    if m == 0:
        return
    newest = other.ts[m - 1]
    if n and log.ts[n - 1] > newest:
        newest = log.ts[n - 1]
    cutoff = newest - log.age if log.age else None
    total = below = 0
    for r in _merge(log, other):
        total += 1
        if cutoff is not None and r[0] < cutoff:
            below += 1
    if total == n:
        return   # every reading of theirs was here already
    drop = total - log.keep
    if drop < below:
        drop = below
    lg = TimeLog(log.keep, log.age)
    k = 0
    for r in _merge(log, other):
        if k >= drop:
            lg._push(r[0], r[1], r[2], r[3])
        k += 1
    log.ts, log.ix, log.seqs, log.lens, log.vals, log.who = lg.ts, lg.ix, lg.seqs, lg.lens, lg.vals, lg.who


def _merge(a, b):
    """(t, author, seq, value bytes) of two logs' union, in order, each
    reading once (a reading in both is taken from ``a``)."""
    n = len(a.ts)
    m = len(b.ts)
    i = j = oa = ob = 0
    while i < n or j < m:
        if j >= m:
            c = -1
        elif i >= n:
            c = 1
        else:
            ka = a._key(i)
            kb = b._key(j)
            c = -1 if ka < kb else (1 if kb < ka else 0)
        if c <= 0:
            w = a.lens[i]
            yield a.ts[i], a.who[a.ix[i]], a.seqs[i], a.vals[oa:oa + w]
            oa += w
            i += 1
            if c == 0:
                ob += b.lens[j]
                j += 1
        else:
            w = b.lens[j]
            yield b.ts[j], b.who[b.ix[j]], b.seqs[j], b.vals[ob:ob + w]
            ob += w
            j += 1
