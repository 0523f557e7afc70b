"""Anti-entropy's snapshot half (sync.py): a replica's snapshot sent to a
peer that lacks operations no longer kept, in CHUNK-sized dmc_snap
messages, and a peer's snapshot collected chunk by chunk and merged. Two
boards in sync exchange operations, not snapshots, so a node loads this
only when a peer fell behind the kept tail (or it did)."""
from shared_protocol import clock
from shared_protocol.wire.envelope import REGISTRY
from shared_protocol.dmc import errors
from shared_protocol.dmc.errors import MALFORMED
from shared_protocol.dmc.sync import CHUNK, RETRY_MS, SNAP_ID_LEN, snap_id


def push(sync, progress):
    """The dmc_snap messages the peer still lacks (``progress``: the id and
    bitmap of the chunks it holds, from its summary)."""
    data = None
    held = 0
    if sync._snap_out is not None and progress and progress[0] == sync._snap_out[0]:
        data = sync._snap_out[1]
        held = progress[1]
    if data is None:
        data = sync.replica.snapshot()
        sync._snap_out = (snap_id(data), data)
    sid = sync._snap_out[0]
    count = (len(data) + CHUNK - 1) // CHUNK
    msgs = []
    for i in range(count):
        if held & (1 << i):
            continue
        msgs.append(REGISTRY.encode("dmc_snap", sync.session, sid, i, count, data[i * CHUNK:(i + 1) * CHUNK]))
    return msgs


def on_chunk(sync, msg, now):
    """One dmc_snap chunk: kept until all have come, then the snapshot is
    checked against its id and merged. Returns datagrams to send (none)."""
    sid = msg["id"]
    count = msg["count"]
    idx = msg["index"]
    if len(sid) != SNAP_ID_LEN or count < 1 or idx >= count:
        raise errors.SyncError(MALFORMED, __debug__ and "snapshot chunk %d of %d" % (idx, count))
    chunk = msg["chunk"]
    if idx < count - 1 and len(chunk) != CHUNK:
        raise errors.SyncError(MALFORMED, __debug__ and "snapshot chunk %d is %d bytes, not %d" % (idx, len(chunk), CHUNK))
    si = sync._snap_in
    if si is None or si[0] != sid or si[1] != count:
        si = sync._snap_in = [sid, count, [None] * count, 0]
    si[2][idx] = chunk
    si[3] |= 1 << idx
    if si[3] != (1 << count) - 1:
        sync._retry_at = clock.add(now, RETRY_MS)
        return []
    sync._snap_in = None
    data = b"".join(si[2])
    if snap_id(data) != sid:
        raise errors.SyncError(MALFORMED, __debug__ and "snapshot does not match its id")
    try:
        sync.replica.merge_snapshot(data)
    except errors.SnapshotError as e:
        sync.last_error = e
        raise
    sync.retries = 0
    if sync.peer_vv is not None and sync.replica.lacks(sync.peer_vv):
        sync._retry_at = clock.add(now, RETRY_MS)
    return []
