"""A member's state read back from its record (Member.to_record): what a
board does once, at boot, for each stored topic. Loaded then and dropped
after (firmware/runtime.py BOOT_ONLY), so its code holds no heap while the
node runs; hosts load it as they read a topic's state."""
from shared_protocol.groups import wire
from shared_protocol.groups.keys import KEY_SIZE, EpochKey
from shared_protocol.groups.member import SEQ_WINDOW
from shared_protocol.groups.readings import _check_dictionary, _is_bytes
from shared_protocol.replay import ReplayWindow


def member_from_record(cls, r):
    """Member.from_record (cls: Member or a subclass)."""
    cur = None
    for n, secret, public in r["epochs"]:
        if n == r["epoch"]:
            cur = (secret, public)
    m = cls(r["topic_public"], r["seed"], r["epoch"], cur[0], cur[1], r["capability"], r["name"])
    for n, secret, public in r["epochs"]:
        m._epochs[n] = EpochKey(m.topic, n, secret, public)
    m.revoked = set(bytes(k) for k in r["revoked"])
    for w in r["windows"]:
        m._windows[bytes(w[0])] = ReplayWindow(SEQ_WINDOW, w[1], w[2])
        m._wused[bytes(w[0])] = w[3] if len(w) > 3 else 0
    m.next_seq = r["next_seq"]
    m.gen = r.get("gen", 0)      # records from before generations: 0
    m._wclock = r.get("wclock", 0)
    # records written before compact readings have no "authors"
    m.authors = authors_from_record(r.get("authors", []))
    m.dicts = dicts_from_record(r.get("dicts", []))
    m.gens = gens_from_record(r.get("gens", []))
    return m


def authors_from_record(rows):
    """Introduced authors of a record, filed under their key's reference and
    marked unchecked: each capability is checked again on first use."""
    out = {}
    for row in rows:
        if isinstance(row, list) and len(row) == 2 and _is_bytes(row[0], KEY_SIZE) and isinstance(row[1], list):
            key = bytes(row[0])
            out[key[:wire.AREF_SIZE]] = [key, row[1], False]
    return out


def dicts_from_record(rows):
    out = {}
    for row in rows:
        if (isinstance(row, list) and len(row) == 3 and _is_bytes(row[0], wire.AREF_SIZE + 3) and isinstance(row[1], int)
                and _check_dictionary(row[2])):
            out[bytes(row[0])] = [row[1], [bytes(e) for e in row[2]]]
    return out


def gens_from_record(rows):
    out = {}
    for row in rows:
        if (isinstance(row, list) and len(row) == 2 and _is_bytes(row[0], wire.AREF_SIZE + 1)
                and isinstance(row[1], int) and 0 <= row[1] < 1 << 24 and row[1] & 0xFF == row[0][-1]):
            out[bytes(row[0])] = row[1]
    return out
