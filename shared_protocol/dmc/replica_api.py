"""A replica's reading and writing API for apps and hosts: maps, counters,
sets and logs read by name, and the local writes other than a reading.

``Replica`` finds these through its ``__getattr__`` (``replica.get(...)``
works as a method), so they are loaded on first use: a sensor node only
appends readings (``Replica.append``) and never loads them. A board keeps
each method of a class in its heap (bytecode, code record, function
object: docs/node.md, "Code a node never runs, and the links' modules
after the topics")."""
from shared_protocol.dmc import ops as O


def obj(r, tcode, name):
    return r.objects.get((tcode, name))


def get(r, name, key, default=None):
    m = obj(r, O.T_MAP, name)
    return default if m is None else m.get(key, default)


def items(r, name):
    m = obj(r, O.T_MAP, name)
    return [] if m is None else m.items()


def counter(r, name):
    c = obj(r, O.T_COUNTER, name)
    return 0 if c is None else c.value()


def members(r, name):
    s = obj(r, O.T_SET, name)
    return [] if s is None else s.members()


def readings(r, name):
    lg = obj(r, O.T_LOG, name)
    return [] if lg is None else lg.readings()


# --- local writes: each returns the operation's bytes to publish ---

def put(r, name, key, value):
    """Map register write; value None deletes the key."""
    return r._local(O.K_PUT, name, key, value)


def add(r, name, delta):
    """Counter: add delta (negative to decrement)."""
    return r._local(O.K_ADD, name, delta, None)


def insert(r, name, elem):
    s = obj(r, O.T_SET, name)
    return r._local(O.K_INSERT, name, elem, [] if s is None else s.observed(elem))


def remove(r, name, elem):
    s = obj(r, O.T_SET, name)
    if s is None or elem not in s:
        return None  # nothing observed, nothing to remove
    return r._local(O.K_REMOVE, name, elem, s.observed(elem))


# what Replica.__getattr__ hands out, as methods
METHODS = {"obj": obj, "get": get, "items": items, "counter": counter, "members": members,
           "readings": readings, "put": put, "add": add, "insert": insert, "remove": remove}
