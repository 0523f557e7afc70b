"""A topic's state and replica read from flash at boot (Topic.__init__).

Kept apart from firmware/topic.py because a board runs it once per topic
while it boots and then drops it (firmware/runtime.py BOOT_ONLY): the
bytecode and log text of reading, checking and setting aside stored files
are heap a running node does not need.
"""
from shared_protocol.wire import cbor
from shared_protocol.dmc import store as dstore
from shared_protocol.dmc import errors
from shared_protocol.dmc.errors import CORRUPT, MISSING
from shared_protocol.dmc.replica import Replica
from shared_protocol.groups.member import Member
from firmware.topic import AUTHOR_GEN_BYTES, AUTHOR_NODE_BYTES, BOARD_PENDING, BOARD_TAIL, OUTBOX_MAX, STATE_VERSION


def load(topic, fresh):
    """Read the topic's state and replica from flash into ``topic`` (a
    Topic being built), as firmware/topic.py describes: refill, a new
    generation, the outbox applied again."""
    had_state = False
    try:
        raw = topic.files.read(topic.base + ".st")
        if raw is None:
            raw = topic.files.read(topic.base + ".st.tmp")
    except errors.StoreError as e:   # over STORE_MAX: unreadable
        _quarantine(topic, topic.base + ".st", e)
        raw = None
    if raw is not None:
        try:
            v = cbor.decode(dstore.unpack(raw))
            if not isinstance(v, list) or len(v) != 4 or v[0] != STATE_VERSION:
                raise errors.StoreError(CORRUPT, __debug__ and "unknown state layout")
            m = Member.from_record(v[1])
            if m.topic != fresh.topic:
                raise errors.StoreError(CORRUPT, __debug__ and "state is for another topic")
            # The invite may be newer (re-flashed): keep the higher epoch
            # (a fresh member gets a generation of its own below).
            topic.member = m if m.epoch >= fresh.epoch else fresh
            topic.outbox = [bytes(x) for x in v[2]][-OUTBOX_MAX:]
            topic.published = v[3]
            had_state = True
        except (errors.StoreError, cbor.DecodeError, KeyError, TypeError, ValueError, IndexError) as e:
            _quarantine(topic, topic.base + ".st", e)
    try:
        topic.replica = topic.store.load()
        if bytes(topic.replica.author[:AUTHOR_NODE_BYTES]) != topic.node_author:
            raise errors.StoreError(CORRUPT, __debug__ and "replica belongs to another node")
        # saved by a firmware that kept a longer tail: this one's bound
        if topic.replica.tail_max > BOARD_TAIL and topic.replica.limit_tail(BOARD_TAIL):
            topic.dirty_replica = True
        # saved with another retention (a firmware or config before)
        if topic.replica.set_log_keep(topic.log_keep):
            topic.dirty_replica = True
    except errors.StoreError as e:
        if e.code != MISSING or had_state:
            _start_refill(topic)   # the marker first: a cut after it redoes the refill
        if e.code != MISSING:
            _quarantine(topic, topic.store.path, e)
        # A new generation: see "Authors" in firmware/topic.py.
        topic.replica = Replica(topic.node_author + topic.random_bytes(AUTHOR_GEN_BYTES), topic.log_keep, 0, BOARD_TAIL)
        topic.dirty_replica = True   # the new author id must be on flash before it is used
    topic.replica.pending_max = BOARD_PENDING
    if topic.member is fresh:
        # Started from the invite (first boot, re-flashed, or the state
        # file lost): a new sequence generation, so this join never
        # reuses a sequence number of an earlier one (groups/member.py,
        # COUNTER_BITS). On flash before the first seal.
        fresh.new_generation(topic.random_bytes(3))
        topic.dirty_state = True
    if not topic.refilling and topic.files.read(topic.base + ".rf") is not None:
        topic.refilling = True     # a refill that a reset interrupted: again
    if topic.refilling:
        topic.member.forget_received()
        topic.dirty_state = True
    for op in topic.outbox:
        try:
            if topic.replica.receive(op) != 0:
                topic.dirty_replica = True
        except Exception as e:  # a stale op from an older replica: keep the outbox as is
            topic.log("upsycle: topic %s: outbox op not applied: %s" % (topic.name, e))


def _quarantine(topic, path, err):
    msg = getattr(err, "message", None) or repr(err)
    topic.log("upsycle: topic %s: %s is unreadable (%s); kept as %s.bad, starting it fresh "
              "(the proxy and peers fill it in again)" % (topic.name, path, msg, path))
    try:
        topic.files.remove(path + ".bad")
        topic.files.rename(path, path + ".bad")
    except OSError:
        topic.files.remove(path)


def _start_refill(topic):
    topic.refilling = True
    dstore.write_atomic(topic.files, topic.base + ".rf", b"")
