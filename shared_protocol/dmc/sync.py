"""Anti-entropy between two replicas of a topic, sans-I/O, in datagrams.

Round (Demers et al., "Epidemic algorithms for replicated database
maintenance", 1987: push-pull anti-entropy; the summary is a version vector as
in Bayou, Petersen et al. 1997):

    A -> B  summary(vv_A, WANT)        B learns what A lacks
    B -> A  ops A lacks (or snapshot)  B pushes the difference
    B -> A  summary(vv_B)              A learns what B lacks
    A -> B  ops B lacks (or snapshot)

Bytes on the wire: the summaries (one (author, seq) pair per author, split
into parts of SUMMARY_AUTHORS) plus the missing operations' own bytes packed
into as few datagrams as fit (each op at most ops.OP_MAX, each datagram at
most framing.DATAGRAM_MAX). The difference, not the state, sets the cost;
only a peer that lacks compacted operations gets the whole state (a snapshot,
in CHUNK-sized pieces it can collect across rounds).

Loss and reordering: every message is idempotent. Operations that arrive
ahead of their dependencies wait in the replica's buffer; whatever is lost
shows up in the next summary, so a side that knows it still lacks something
asks again (poll) after RETRY_MS, and the peer resends only what is still
missing. Splits resume the same way: a burst stops at BURST_MAX datagrams
with the MORE flag and the receiver asks for the rest at once.

Message types (block "dmc", 32..47 of envelope.TYPE_BLOCKS):
    32 dmc_op       one operation published live (pub/sub payload)
    33 dmc_summary  session, flags, part, parts, vv (flat), snapshot progress
    34 dmc_ops      session, flags, operations
    35 dmc_snap     session, snapshot id, index, count, chunk
"""

import hashlib

from shared_protocol import clock
from shared_protocol.wire import cbor, envelope
from shared_protocol.wire.envelope import REGISTRY
from shared_protocol.dmc import ops as O
from shared_protocol.dmc.replica import _vv_from, _vv_value
from shared_protocol.dmc import errors
from shared_protocol.dmc.errors import MALFORMED, OVERSIZE

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# The message types' field specs are literals (kinds as wire/envelope.py's
# strings, bounds as const()), so each is one constant tuple: in flash when
# frozen, no bytecode to build it in a .mpy (session/messages.py). Limits of
# other modules, written out for that (tests/shared/test_dmc_sync.py checks
# them); the datagram limit also spares a board wire/framing.py:
_AUTHORS = const(32)          # ops.AUTHORS_MAX
_SNAPSHOT = const(32768)      # replica.SNAPSHOT_MAX
_DATAGRAM = const(1200)       # framing.DATAGRAM_MAX

# Authors per summary part: 16 x (32-byte id + 5-byte seq + heads) is about
# 650 bytes, inside one datagram with room to spare.
SUMMARY_AUTHORS = const(16)
SUMMARY_PARTS_MAX = const((_AUTHORS + SUMMARY_AUTHORS - 1) // SUMMARY_AUTHORS)
# Snapshot chunk: leaves room for the message header inside a datagram.
CHUNK = const(1024)
CHUNKS_MAX = const((_SNAPSHOT + CHUNK - 1) // CHUNK)
# Datagrams sent in answer to one summary: 32 x 1200 bytes is ~38 KB, a
# burst a board's UDP stack and the radio absorb; the rest follows on request.
BURST_MAX = 32
# Operations listed in one dmc_ops message (each takes at least ~25 bytes).
_OPS_PER_MSG_MAX = const(64)
# Wait before asking again when this side knows it still lacks operations.
RETRY_MS = 2000
# Asking again gives up after this many tries in a row without progress.
RETRIES_MAX = 8
SNAP_ID_LEN = const(8)

# summary flags
WANT = 1      # "send me your summary too"
# ops flags
_LAST = const(1)      # last datagram of this burst
_MORE = const(2)      # the burst stopped at BURST_MAX: ask again for the rest

OP = REGISTRY.add((32, "dmc_op", ("op", "list", 16,), 1))
SUMMARY = REGISTRY.add((33, "dmc_summary", (
    "session", "uint", 0xFFFFFFFF,
    "flags", "uint", 0xFF,
    "part", "uint", SUMMARY_PARTS_MAX - 1,
    "parts", "uint", SUMMARY_PARTS_MAX,
    "vv", "list", 2 * SUMMARY_AUTHORS,
    "snap", "list", 2,            # [] or [snapshot id, chunks-held bitmap]
), 6))
OPS = REGISTRY.add((34, "dmc_ops", (
    "session", "uint", 0xFFFFFFFF,
    "flags", "uint", 0xFF,
    "ops", "list", _OPS_PER_MSG_MAX,
), 3))
SNAP = REGISTRY.add((35, "dmc_snap", (
    "session", "uint", 0xFFFFFFFF,
    "id", "bytes", SNAP_ID_LEN,
    "index", "uint", CHUNKS_MAX - 1,
    "count", "uint", CHUNKS_MAX,
    "chunk", "bytes", CHUNK,
), 5))

# Bytes of a dmc_ops message around its operations: array head, version,
# type, session (up to 5), flags (up to 2), ops array head (up to 3).
_OPS_HEADER_MAX = const(1 + 1 + 2 + 5 + 2 + 3)


def snap_id(data):
    return hashlib.sha256(data).digest()[:SNAP_ID_LEN]


def live_op(op_bytes):
    """Wrap one operation's bytes as a dmc_op message (no re-encoding)."""
    out = bytearray()
    cbor.encode_head(out, 4, 3)
    out.append(envelope.VERSION)
    cbor.encode_into(out, OP[0])
    out.extend(op_bytes)
    return bytes(out)


def _ops_message(session, flags, chunk):
    # Built by hand around the stored op bytes: the same bytes
    # REGISTRY.encode would produce, without decoding every op first.
    out = bytearray()
    cbor.encode_head(out, 4, 5)
    out.append(envelope.VERSION)
    cbor.encode_into(out, OPS[0])
    cbor.encode_into(out, session)
    cbor.encode_into(out, flags)
    cbor.encode_head(out, 4, len(chunk))
    for b in chunk:
        out.extend(b)
    return bytes(out)


class Sync:
    """One side of anti-entropy with one peer.

    start(now) -> datagrams; receive(datagram, now) -> datagrams to send
    back; poll(now) -> datagrams (asks again while something is missing).
    Times are milliseconds from any monotonic clock the caller has (tick
    arithmetic through clock.py).
    """

    def __init__(self, replica, peer=None, session=0):
        self.replica = replica
        self.peer = peer
        self.session = session & 0xFFFFFFFF
        self.peer_vv = None
        self._parts = None      # [session, parts, {part: pairs}] being assembled
        self._snap_in = None    # [id, count, [chunks], bitmap]
        self._snap_out = None   # (id, bytes) cached while a peer collects it
        self._retry_at = None
        self.retries = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.ops_in = 0
        self.rejected = 0       # ops refused (buffer full, limits) this session
        self.last_error = None

    # --- outgoing ---

    def summary(self, flags=0):
        r = self.replica
        flat = _vv_value(r.vv)
        n = len(flat) // 2
        parts = (n + SUMMARY_AUTHORS - 1) // SUMMARY_AUTHORS or 1
        snap = []
        if self._snap_in is not None:
            snap = [self._snap_in[0], self._snap_in[3]]
        out = []
        for i in range(parts):
            chunk = flat[2 * SUMMARY_AUTHORS * i:2 * SUMMARY_AUTHORS * (i + 1)]
            out.append(REGISTRY.encode("dmc_summary", self.session, flags, i, parts, chunk, snap))
        return self._count(out)

    def start(self, now):
        self.retries = 0
        self._retry_at = clock.add(now, RETRY_MS)
        return self.summary(WANT)

    def poll(self, now):
        """Ask again if this side still lacks what the peer has."""
        if self._retry_at is None or not clock.due(now, self._retry_at):
            return []
        if not self.behind():
            self._retry_at = None
            return []
        if self.retries >= RETRIES_MAX:
            self._retry_at = None
            return []
        self.retries += 1
        self._retry_at = clock.add(now, RETRY_MS)
        return self.summary(WANT)

    def behind(self):
        """True while the peer is known to hold operations we lack."""
        if self._snap_in is not None:
            return True
        if self.peer_vv is None:
            return self._retry_at is not None
        return self.replica.lacks(self.peer_vv)

    def _count(self, msgs):
        for m in msgs:
            self.bytes_out += len(m)
        return msgs

    def _push(self, peer_vv, snap_progress):
        """Datagrams carrying what the peer lacks, at most BURST_MAX."""
        r = self.replica
        if r.needs_snapshot(peer_vv):
            from shared_protocol.dmc import sync_snapshot   # (loaded on first use: see there)
            return sync_snapshot.push(self, snap_progress)
        out = []
        chunk = []
        size = _OPS_HEADER_MAX
        for data in r.ops_since(peer_vv):
            if chunk and (size + len(data) > _DATAGRAM or len(chunk) >= _OPS_PER_MSG_MAX):
                out.append(chunk)
                chunk = []
                size = _OPS_HEADER_MAX
                if len(out) >= BURST_MAX:
                    break
            chunk.append(data)
            size += len(data)
        more = len(out) >= BURST_MAX
        if chunk and not more:
            out.append(chunk)
        msgs = []
        for i in range(len(out)):
            flags = 0
            if i == len(out) - 1:
                flags = _LAST | (_MORE if more else 0)
            msgs.append(_ops_message(self.session, flags, out[i]))
        return msgs

    # --- incoming ---

    def receive(self, data, now):
        """Handle one datagram from the peer; return datagrams to send.

        Raises SyncError (or the envelope/CBOR errors) for a malformed
        message; the replica is unchanged by it.
        """
        self.bytes_in += len(data)
        msg = REGISTRY.decode(data)
        t = msg.type
        if t is SUMMARY:
            return self._count(self._on_summary(msg, now))
        if t is OPS:
            return self._count(self._on_ops(msg, now))
        if t is SNAP:
            from shared_protocol.dmc import sync_snapshot
            return self._count(sync_snapshot.on_chunk(self, msg, now))
        if t is OP:
            self._apply_values([msg["op"]])
            return []
        raise errors.SyncError(MALFORMED, __debug__ and "%s is not a DMC sync message" % msg.name)

    def _on_summary(self, msg, now):
        parts = msg["parts"]
        part = msg["part"]
        if parts < 1 or part >= parts:
            raise errors.SyncError(MALFORMED, __debug__ and "summary part %d of %d" % (part, parts))
        flat = msg["vv"]
        prs = O.pairs(flat, SUMMARY_AUTHORS, "vv", "SyncError")
        snap = msg["snap"]
        if snap:
            if (len(snap) != 2 or not isinstance(snap[0], bytes) or len(snap[0]) != SNAP_ID_LEN
                    or not O.is_int(snap[1]) or snap[1] < 0 or snap[1] >= (1 << CHUNKS_MAX)):
                raise errors.SyncError(MALFORMED, __debug__ and "summary snapshot progress must be [id, bitmap]")
        sess = msg["session"]
        if parts == 1:
            pv = _vv_from(flat, "SyncError")
        else:
            if self._parts is None or self._parts[0] != sess or self._parts[1] != parts:
                self._parts = [sess, parts, {}]
            self._parts[2][part] = prs
            if len(self._parts[2]) < parts:
                return []
            pv = {}
            for i in range(parts):
                for a, s in self._parts[2][i]:
                    pv[a] = s
            self._parts = None
            if len(pv) > O.AUTHORS_MAX:
                raise errors.SyncError(OVERSIZE, __debug__ and "summary lists more than %d authors" % O.AUTHORS_MAX)
        self.peer_vv = pv
        if self.peer is not None:
            self.replica.note_peer(self.peer, pv)
        out = self._push(pv, snap)
        if msg["flags"] & WANT:
            out = out + self.summary(0)
        if self.replica.lacks(pv):
            self._retry_at = clock.add(now, RETRY_MS)
        return out

    def _apply_values(self, values):
        r = self.replica
        progressed = False
        for v in values:
            try:
                data = cbor.encode(v)
                op = O.from_value(v, len(data))
                if r.receive_op(op, data) != 0:
                    progressed = True
                    self.ops_in += 1
            except errors.OpError as e:
                self.rejected += 1
                self.last_error = e
        if progressed:
            self.retries = 0
        return progressed

    def _on_ops(self, msg, now):
        self._apply_values(msg["ops"])
        flags = msg["flags"]
        if flags & _LAST and (flags & _MORE or (self.peer_vv is not None and self.replica.lacks(self.peer_vv))):
            # the rest did not come (burst limit, or lost datagrams): ask now,
            # but not forever if what is missing keeps being refused
            self._retry_at = clock.add(now, RETRY_MS)
            if self.retries < RETRIES_MAX:
                self.retries += 1
                return self.summary(WANT)
        return []
