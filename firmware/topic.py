"""One private topic on the node: group membership, replica, outbox, on flash.

Files per topic, in DATA_DIR, named by the first 8 bytes of the topic id:
  <id>.dmc   the DMC replica (shared_protocol.dmc.store: checksummed,
             written to a temp file and renamed over the old one)
  <id>.st    the node's own state for the topic, same format and same
             atomic replace: [1, member record, outbox, published]
             - member record: group sequence generation and number, replay
               windows, epochs (a restarted node must never reuse a
               sequence number: other members would drop the publication
               as a replay; a node that starts from its invite draws a new
               generation, so a re-flash or a second board does not either)
             - outbox: the DMC operations this node wrote that the proxy has
               not acknowledged yet, oldest first
             - published: how many readings this node wrote (for the demo)
  <id>.rf    present while the topic refills from the proxy after its
             replica was set aside (see "Refill" below); its presence is
             all that counts, so a reset during the refill starts it again

Write order (no multi-file atomicity on littlefs): the state file first,
then the replica. A power cut between them leaves an outbox holding an op
the replica lacks; loading them (firmware/topic_load.py) applies outbox ops
to the replica again, which the replica ignores as duplicates when it has
them. So nothing accepted by publish() is lost, whatever the cut.

Refill: a replica that fails its checks is set aside (``.bad``); a replica
that is gone while the state file is there is lost too. The topic then
starts empty and ``refilling`` (the ``.rf`` marker is written before the
file is set aside): the runtime asks the proxy to start the topic over
(ClientSession.resubscribe, docs/node.md) and the proxy delivers the history
it keeps. The replay windows go with the replica (Member.forget_received),
or that history would be refused as replays.

Authors: every new replica (first boot or after one was lost) writes under
a new DMC author id, the node's 4-byte prefix and 4 fresh random bytes (its
generation). A replica that starts over at sequence 1 under the old id
would reuse sequence numbers: peers and the proxy would take the new
readings for ones they already hold and drop them, for good if the old
ones had aged out of the proxy. Under a new id nothing clashes, so readings
are taken during a refill too, and the old id's readings come back as
another author's. The generation is also in the message id (message_seq).
"""
from shared_protocol.wire import cbor
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import store as dstore
from shared_protocol.groups.member import Publication
from shared_protocol.groups.readings import Batch
from shared_protocol.groups.wire import BATCH_MAX, DICT_MAX
from firmware import platform

DATA_DIR = "/data"
STATE_VERSION = 1
# Operations waiting for the proxy's acknowledgement. A reading op is ~60
# bytes, so a full outbox is ~8 KB of RAM and flash: at one reading a
# minute, two hours without a proxy. Past this the node refuses new
# readings (publish raises) rather than forget accepted ones.
OUTBOX_MAX = 128
# Readings a board keeps per log in its replica, unless its config says
# otherwise ("replica": {"log_keep": 1..dmc.crdts.LOG_MAX}): the newest of
# the topic's readings, what a board shows or acts on. The proxy keeps the
# topic's history (7 days / 10,000 messages by default) and a host's
# replica 200 readings; sync does not depend on it (dmc/replica.py). Each
# kept reading holds some 20 bytes of heap (16 with a board's single
# floats), taken when the log is made: 200 held 8 KB of a 2-topic node,
# 64 hold 2.6 KB (docs/node.md). A stored replica saved with another
# bound is brought to this one at boot.
LOG_KEEP = 64
# Applied ops kept to serve LAN peers' anti-entropy (dmc.replica TAIL_MAX is
# 256, a host's figure): a board keeps 8, some 0.6 KB per topic in heap and
# on flash (an op is some 46 bytes, a bytes object of 80); a peer
# missing older ops gets a snapshot instead, more bytes on air (1.6 KB for
# a full log of two authors' readings, where 9-16 ops are 0.4-0.7 KB).
# 64 held 4 KB per topic, which a frozen node in 72 KB did not have
# once its logs were full; 16 held one object per reading for 16 readings
# among each reading's garbage, and a .mpy node in 150 KB then lost the
# last free block a datagram read needs after some 120 readings
# (tools/bench/bench_rig.py --readings 150 --reboot 5, docs/node.md "Log
# texts on the flash, a shorter tail"). The proxy, not the tail, is what keeps a node's
# readings for members that are away.
BOARD_TAIL = 8
# Early operations a board's replica holds while it waits for the ones
# they depend on (dmc.replica PENDING_MAX is 64, a host's figure): each is
# some 300 bytes decoded, so 64 per topic could take 40 KB of a frozen
# node's 80 (a node that booted late held a dozen behind a lost first
# message, docs/node.md). Past this an early op is refused (OpError
# BUFFER_FULL, the replica unchanged) and comes again with the LAN's next
# anti-entropy round or the proxy's refill.
BOARD_PENDING = 8
# A DMC author id: the first AUTHOR_NODE_BYTES of the node id (so a replica
# file from another node is recognised) and AUTHOR_GEN_BYTES of randomness
# per replica generation (runtime.AUTHOR_BYTES is the sum).
AUTHOR_NODE_BYTES = 4
AUTHOR_GEN_BYTES = 4
# Names (logs, map keys) a node's readings repeat that go in its group
# dictionary (reading_dictionary): a sensor writes one or two.
NAMES_PACKED = 2


class OutboxFull(Exception):
    pass


class Topic:
    def __init__(self, invite, node_author, data_dir=DATA_DIR, files=None, log=print, random_bytes=None, batch=1,
                 log_keep=LOG_KEEP):
        # Imported here: the invite decoder runs once per topic at boot
        # (firmware.runtime.BOOT_ONLY lets the GC free it afterwards).
        from shared_protocol.groups.invite import member_from_url
        fresh = member_from_url(invite)  # raises a GroupError on a bad invite
        self.name = fresh.name
        self.topic = fresh.topic
        self.node_author = bytes(node_author[:AUTHOR_NODE_BYTES])
        self.random_bytes = random_bytes or platform.random_bytes
        # Readings per message to the proxy: 1 signs every reading; 2..BATCH_MAX
        # (battery nodes) wait until that many are on flash and send them in
        # one message under one signature (groups/readings.py).
        self.batch = batch if 1 <= batch <= BATCH_MAX else 1
        self.log = log
        self.log_keep = log_keep
        self.files = files if files is not None else dstore.OsFiles()
        # Its files: base + ".st" (state), ".rf" (a refill under way),
        # ".dmc" (the replica); the names made when used, not kept (a
        # string is some 64 bytes of a board's heap).
        self.base = base = "%s/%s" % (data_dir, fresh.topic[:8].hex())
        self.refilling = False
        self.store = dstore.Store(base + ".dmc", self.files, _write_buf())
        self.member = fresh
        self.outbox = []
        self.published = 0
        self.replica = None
        self.callbacks = []
        self.intro_wait = None  # deliveries waiting for their author's introduction (core.deliver)
        self.names = []        # names this node wrote since boot (reading_dictionary)
        self.dirty_state = False
        self.dirty_replica = False
        # The stored state and replica, read once at boot by a module the
        # board then drops (firmware.runtime.BOOT_ONLY): its bytecode and
        # log text are some 1.2 KB of a .mpy node's heap it needs no more.
        from firmware import topic_load
        topic_load.load(self, fresh)

    # -- persistence --

    @property
    def author(self):
        """This node's DMC author id in the topic: its replica's (see "Authors")."""
        return self.replica.author

    def end_refill(self):
        """The proxy has delivered what it keeps (the runtime decides)."""
        self.refilling = False
        self.files.remove(self.base + ".rf")

    def save(self):
        """Write what changed: state first, then the replica (see module doc)."""
        n = 0
        if self.dirty_state:
            dstore.write_value(self.files, self.base + ".st",
                               [STATE_VERSION, self.member.to_record(), self.outbox, self.published],
                               self.store.buf)
            self.dirty_state = False
            n += 1
        if self.dirty_replica:
            self.store.save(self.replica)
            self.dirty_replica = False
            n += 1
        return n

    def mark_synced(self):
        """A LAN sync changed the replica: persist it at the end of the turn."""
        self.dirty_replica = True

    # -- local writes --

    def append(self, key, t, value):
        """A reading: append to the log ``key``; returns the op bytes."""
        if len(self.outbox) >= OUTBOX_MAX:
            raise OutboxFull("%d readings wait for the proxy already: the reading is dropped" % OUTBOX_MAX)
        op = self.replica.append(key, t, value)
        if key not in self.names and len(self.names) < NAMES_PACKED:
            self.names.append(key)
        self.outbox.append(op)
        self.published += 1
        self.dirty_state = True
        self.dirty_replica = True
        self._notify(key, value, self.author)
        return op

    def acked(self, author, op_seq):
        """The proxy holds our op (author, DMC sequence): drop it and that
        author's older ones (the outbox may hold ops of an older generation)."""
        keep = []
        for op in self.outbox:
            a, s = O.author_seq(op)
            if s > op_seq or a != author:
                keep.append(op)
        if len(keep) != len(self.outbox):
            self.outbox = keep
            self.dirty_state = True

    # -- sealing and opening: the group layer of this topic --

    def next_message(self, sent, now):
        """The next message for the proxy, or None: (DMC author, DMC seq of
        its last op, payload). It holds the oldest outbox ops not handed to
        the session yet (``sent``: DMC author -> highest seq handed over on
        this link): one op, sealed and signed, or in batch mode ``batch``
        consecutive ops of one author under one signature. A batch waits on
        flash until it is full, unless a newer author follows (the ops of
        an older replica generation go out as they are)."""
        ops = []
        author = None
        for op in self.outbox:
            a, seq = O.author_seq(op)
            if seq <= sent.get(a, 0):
                continue
            if author is None:
                author = a
            elif a != author:
                break
            ops.append(op)
            if len(ops) >= self.batch:
                break
        else:
            if len(ops) < self.batch:
                return None   # an incomplete batch (or nothing): wait for more readings
        if not ops:
            return None
        m = self.member
        rand = self.random_bytes(32)
        if not m.epoch_key().readable:
            payload = m.seal(ops[0], rand, now)        # write-only: group_pub to the epoch key
            ops = ops[:1]
        else:
            m.set_dictionary(reading_dictionary(self.replica, self.names))
            if self.batch > 1:
                payload = m.seal_batch(ops, rand, now)
            else:
                payload = m.seal_reading(ops[0], rand, now)
        self.dirty_state = True   # the group sequence number moved: on flash before the datagram leaves
        return author, O.author_seq(ops[-1])[1], payload

    def waiting(self):
        """Whether outbox ops wait for the proxy now (a batch still filling
        does not keep a battery node awake)."""
        if self.batch <= 1:
            return len(self.outbox) > 0
        if len(self.outbox) >= self.batch:
            return True
        a0 = None
        for op in self.outbox:
            a = O.author_seq(op)[0]
            if a0 is not None and a != a0:
                return True
            a0 = a
        return False

    def open(self, payload, now):
        """A delivery from the proxy: the list of DMC op bodies it proves
        (one, or a batch), or an EpochChanged; raises a GroupError (or a
        cbor/envelope error) and changes nothing if any check fails."""
        ev = self.member.open(payload, now)
        self.dirty_state = True   # replay windows, introductions or epoch moved
        if isinstance(ev, Publication):
            return [ev.body]
        if isinstance(ev, Batch):
            out = []
            for p in ev.publications:
                out.append(p.body)
            return out
        return ev

    # -- remote operations --

    def apply(self, op_bytes):
        """An op from a member (opened from a delivery or a peer). Returns
        the replica's result; raises OpError on a bad op (nothing changes)."""
        r = self.replica.receive(op_bytes)
        if r != 0:
            self.dirty_replica = True
            if r == 1 and self.callbacks:
                op = O.decode(op_bytes)
                if op[4] == O.K_APPEND:
                    self._notify(op[5], op[7], op[0])
                elif op[4] == O.K_PUT:
                    self._notify(op[6], op[7], op[0])
        return r

    def _notify(self, key, value, author):
        for cb in self.callbacks:
            try:
                cb(key, value, author)
            except Exception as e:
                self.log("upsycle: on_change callback failed: %r" % (e,))


_write = None


def _write_buf():
    """The one save buffer of every topic (dmc.store.WRITE_CHUNK bytes):
    a node saves its topics one after another in its loop turn, never two
    at once, so one buffer serves all (a buffer per topic held some 290
    bytes each on a board's heap)."""
    global _write
    if _write is None:
        _write = bytearray(dstore.WRITE_CHUNK)
    return _write


def reading_dictionary(replica, names=()):
    """What this node's readings repeat, for the group layer to send once
    (groups/readings.py, pack): the CBOR of its DMC author id, which heads
    every op it writes, of the names it writes to (``names``, first use
    first) and of the other authors of the topic, which its ops' causal
    deps name (in id order). An op of an older generation of ours (another
    author id) just goes with that id in full."""
    own = replica.author
    d = [cbor.encode(own)]
    for n in names:
        d.append(cbor.encode(n))
    for a in sorted(replica.vv):
        if len(d) >= DICT_MAX:
            break
        if a != own:
            d.append(cbor.encode(a))
    return d


def message_seq(author, seq):
    """The sequence part of an op's message id at the proxy: the author's
    generation bytes above its DMC sequence, so a new generation, which
    starts at 1 again, never repeats an id the proxy already stores."""
    g = int.from_bytes(author[AUTHOR_NODE_BYTES:AUTHOR_NODE_BYTES + AUTHOR_GEN_BYTES], "big")
    return (g << 32) | seq
