"""The data types a DMC holds, each op-based with a state-based join.

Operations arrive in causal order (the replica's buffer sees to it), so each
``apply`` is the op-based update of Shapiro et al., "A comprehensive study of
Convergent and Commutative Replicated Data Types" (INRIA RR-7506, 2011).
``join`` merges a whole state received as a snapshot (a replica that returns
after the others compacted their logs); it is the state-based merge of the
same paper, with the two states' version vectors as causal context, so a
snapshot and the operations that built it reach the same state.

``to_value`` is the deterministic encoding of a state: every collection is
sorted explicitly (MicroPython dicts are unordered). ``from_value`` checks a
decoded state as strictly as an incoming operation and raises SnapshotError.

Limits per object (ITEMS_MAX, LOG_MAX) bound what a local write may create;
incoming operations may exceed them up to ITEMS_HARD (concurrent writers can
each add the last allowed item), never further.
"""

from shared_protocol.wire import cbor
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import errors
from shared_protocol.dmc.errors import MALFORMED

# Keys of one map / elements of one set that a local write may create: a
# board's topic holds a handful of settings and tags, not a database.
ITEMS_MAX = 64
# What remote writes may push an object to (concurrent adds past ITEMS_MAX).
ITEMS_HARD = 2 * ITEMS_MAX
# Upper bound on a log's retention count: 512 readings of ~12 bytes each is
# about 16 KB of heap, a third of the edge stack's 48 KB budget.
LOG_MAX = 512


def _bad(msg):
    return errors.SnapshotError(MALFORMED, msg)


def _ekey(e):
    # Set elements mix text, bytes and ints: order them by their encoding.
    return cbor.encode(e)


# type code -> (module, class): each type loads on first use (see the
# crdt_* modules). Full module names: a board build that packs a module
# into a bundle names the bundle in such a string (host/upsycle/mpy_bundle.py).
# Indexed by the code (O.T_MAP .. O.T_LOG, 1..4): a constant tuple, kept in
# flash by a frozen image, where a dict was made in the heap.
_KINDS = (
    None,
    ("shared_protocol.dmc.crdt_map", "LwwMap"),
    ("shared_protocol.dmc.crdt_counter", "PNCounter"),
    ("shared_protocol.dmc.crdt_set", "ORSet"),
    ("shared_protocol.dmc.crdt_log", "TimeLog"),
)


def cls(tcode):
    """The class of a type code, or None for an unknown one."""
    if not O.is_int(tcode) or not 0 < tcode < len(_KINDS):
        return None
    k = _KINDS[tcode]
    mod = __import__(k[0], None, None, [k[1]])
    return getattr(mod, k[1])


def new(tcode, cfg):
    if tcode == O.T_LOG:
        return cls(tcode)(cfg[0], cfg[1])
    return cls(tcode)()
