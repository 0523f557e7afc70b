"""Errors of the DMC replica, its sync and its store.

Remote errors (``OpError``, ``SnapshotError``, ``SyncError``, ``StoreError``)
mean bytes from outside (a peer, the radio, the flash) are bad; the replica is
left exactly as it was. ``ReplicaLimitError`` is local: the caller asked for a
write the replica's named limits do not allow.
"""

from shared_protocol.errors import LocalError, RemoteError, kind

# Codes shared by the errors below.
MALFORMED = "malformed"        # not the shape an operation/snapshot must have
OVERSIZE = "oversize"          # over OP_MAX / SNAPSHOT_MAX / a field bound
UNKNOWN_TYPE = "unknown_type"  # an operation kind or data type we do not know
GAP = "seq_gap"                # author's sequence jumps past what the buffer holds
DEP_BEYOND = "dep_beyond"      # a dependency further ahead than the buffer holds
BUFFER_FULL = "buffer_full"    # the early-operation buffer is full
AUTHORS_FULL = "authors_full"  # a new author past AUTHORS_MAX
OBJECTS_FULL = "objects_full"  # a new object past OBJECTS_MAX
ITEMS_FULL = "items_full"      # a map/set past its item bound
TYPE_CLASH = "type_clash"      # operation kind does not fit the object's type
CORRUPT = "corrupt"            # stored file fails its checks
MISSING = "missing"            # no stored state at that path


# Name, base, code (a line each; made on first use, see
# shared_protocol.errors.kind; board modules name them as errors.OpError):
# - OpError: an incoming operation is malformed or not acceptable.
# - SnapshotError: an incoming or stored snapshot is malformed.
# - SyncError: an anti-entropy message is malformed.
# - StoreError: stored replica state is missing or corrupt.
# - ReplicaLimitError: a local write would break one of the replica's named
#   limits.
KINDS = """
OpError RemoteError dmc_op
SnapshotError RemoteError dmc_snapshot
SyncError RemoteError dmc_sync
StoreError RemoteError dmc_store
ReplicaLimitError LocalError dmc_limit
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def __getattr__(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)
