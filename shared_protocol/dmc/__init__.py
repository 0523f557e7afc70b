"""Distributed Mutable Container: the per-topic CRDT replica (DREAM D1.2),
its anti-entropy sync, compaction and persistence. Sans-I/O; runs unchanged
on MicroPython and CPython.

    from shared_protocol.dmc import Replica, Sync, Store

Those names load their submodule on first use (a module ``__getattr__``,
PEP 562, which MicroPython has too): importing one submodule does not
import them all. On a board every module imported from .mpy keeps its
bytecode in the heap, and a node without a LAN never needs ``sync`` (~5 KB).
"""

# name -> the submodule that defines it
_WHERE = {
    "OpError": "errors", "SnapshotError": "errors", "SyncError": "errors",
    "StoreError": "errors", "ReplicaLimitError": "errors",
    "Replica": "replica", "APPLIED": "replica", "BUFFERED": "replica", "DUPLICATE": "replica",
    "Sync": "sync",
    "Store": "store", "OsFiles": "store",
}
# MicroPython's `from package import submodule` asks __getattr__ first and
# does not fall back to importing the submodule when it raises, so
# __getattr__ imports these itself.
_SUBMODULES = ("crdts", "crdt_counter", "crdt_log", "crdt_map", "crdt_set", "errors", "log_snapshot", "ops", "replica",
               "replica_api", "snapshot", "store", "sync", "sync_snapshot")


def _load(mod):
    return __import__("shared_protocol.dmc." + mod, None, None, [mod])


def __getattr__(name):
    if name in _SUBMODULES:
        return _load(name)
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(name)
    return getattr(_load(mod), name)
