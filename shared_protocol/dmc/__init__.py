"""Distributed Mutable Container: the per-topic CRDT replica (DREAM D1.2),
its anti-entropy sync, compaction and persistence. Sans-I/O; runs unchanged
on MicroPython and CPython.

    from shared_protocol.dmc import Replica, Sync, Store
"""

from shared_protocol.dmc.errors import (
    OpError, SnapshotError, SyncError, StoreError, ReplicaLimitError)
from shared_protocol.dmc.replica import Replica, APPLIED, BUFFERED, DUPLICATE
from shared_protocol.dmc.sync import Sync
from shared_protocol.dmc.store import Store, OsFiles
