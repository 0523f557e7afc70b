"""A member's view of one private topic: seal publications, open them, apply
re-keys. Sans-I/O: the caller passes the current time (seconds) and fresh
random bytes in; the object keeps the keys and the replay state, which the
caller persists with ``to_record``.

Opening checks everything before changing anything: size, envelope, topic,
epoch, AEAD tag, structure, revocation, author signature, write capability,
replay. Only then does the (author, seq) window advance.
"""
from shared_protocol.wire import envelope
from shared_protocol.crypto import api
from shared_protocol.groups import errors as gerr
from shared_protocol.groups import wire
from shared_protocol.groups.keys import KEY_SIZE, EpochKey, Identity, topic_id
from shared_protocol.groups import readings
from shared_protocol.groups.readings import authors_to_record, dicts_to_record, gens_to_record
from shared_protocol.replay import ReplayWindow

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Epochs kept after a re-key, so publications sealed just before it (still in
# a proxy's queue) stay readable. Removed authors are refused in every epoch.
KEPT_EPOCHS_MAX = 3
# Replay windows kept, one per (author, generation). Every author needs an
# admin-signed capability, so the admin bounds the authors; twice the member
# limit leaves room for members replaced over time and for second devices.
AUTHORS_MAX = 2 * wire.MEMBERS_MAX
# Generations of one author with a window: a member key joined on several
# devices, or joined again. A fifth generation replaces the author's least
# recently used window (the author's own doing: an evicted generation's old
# publications could be replayed once more, no one else's).
GENS_PER_AUTHOR_MAX = 4
# Removed member keys remembered (one per removal).
REVOKED_MAX = 256
# Publications per author accepted out of order (and remembered as seen).
SEQ_WINDOW = 64
# A publication's sequence number (48 bits on the wire) is a generation and
# a counter: seq = generation << COUNTER_BITS | counter. Every join of an
# invite (a host's `topic join`, a board flashed from the invite, a board
# whose state file was lost) draws a random generation, so two devices or
# two joins of one member key never reuse a sequence number: readers keep a
# replay window per (author, generation). 24 random bits: two joins of one
# key clash with probability 2**-24; 2**24 publications per generation (a
# reading a second for 194 days), after which seal() draws the next one.
COUNTER_BITS = 24
COUNTER_MAX = (1 << COUNTER_BITS) - 1
_GEN_MAX = const((1 << 24) - 1)
_GEN_BYTES = const(3)
SEQ_MAX = 0xFFFFFFFFFFFF
_GEN_LABEL = const(b"upsycle-gen-v1")
_ZERO_NONCE = b"\x00" * wire.NONCE_SIZE


class Publication:
    """A publication that passed every check."""

    def __init__(self, topic, epoch, author, seq, body):
        self.topic = topic
        self.epoch = epoch
        self.author = author
        self.seq = seq
        self.body = body


class EpochChanged:
    def __init__(self, epoch, removed):
        self.epoch = epoch
        self.removed = removed


def _is_key(v, size=KEY_SIZE):
    return isinstance(v, (bytes, bytearray)) and len(v) == size


def _gen_from(rand):
    g = int.from_bytes(bytes(rand[:_GEN_BYTES]), "big")
    return g or 1   # 0 is the generation of records made before generations


def window_key(author, gen):
    """Replay state is per (author, generation); generation 0 (records from
    before generations) keeps the bare author key."""
    return bytes(author) if gen == 0 else bytes(author) + gen.to_bytes(_GEN_BYTES, "big")


class Member:
    def __init__(self, topic_public, member_seed, epoch, epoch_secret=None, epoch_public=None,
                 capability=None, name=""):
        if not _is_key(topic_public):
            raise gerr.Malformed(message=__debug__ and "topic public key must be 32 bytes")
        self.topic_public = bytes(topic_public)
        self.topic = topic_id(self.topic_public)
        self.identity = Identity(member_seed)
        self.name = name
        self.capability = capability
        self.epoch = epoch
        self._epochs = {epoch: EpochKey(self.topic, epoch, epoch_secret, epoch_public)}
        self.revoked = set()
        self._windows = {}
        self._wused = {}     # window key -> when last used (self._wclock)
        self._wclock = 0
        # Parts of the next epoch's re-key seen without our entry: all of
        # them seen means we were removed. Not persisted (only informs).
        self._rk_epoch = -1
        self._rk_mask = 0
        self.gen = 0
        self.next_seq = 1     # the counter of the current generation
        # Compact readings (readings.py): authors introduced to us, by their
        # short reference, and how many messages until we introduce ourselves.
        self.authors = {}
        self.intro_left = 0
        self.max_authors = AUTHORS_MAX
        # Signed readings (group_rs): our dictionary (byte strings our
        # readings repeat, sent in our introduction; set_dictionary) and the
        # ones other authors introduced, by author reference and generation.
        self.dictionary = []
        self.dicts = {}
        # the sequence generations authors introduced, by reference and the
        # generation's low byte (what their readings without one carry)
        self.gens = {}

    # -- roles --

    @property
    def is_admin(self):
        return self.identity.public == self.topic_public

    @property
    def can_read(self):
        return self._epochs[self.epoch].readable

    @property
    def can_write(self):
        return self.is_admin or self.capability is not None

    def epoch_key(self, epoch=None):
        return self._epochs[self.epoch if epoch is None else epoch]

    def new_generation(self, rand):
        """Start a new sequence generation (``rand``: 3 or more fresh random
        bytes). Called once per join: a host joining an invite, a board
        starting from the invite in its config."""
        g = _gen_from(rand)
        if g == self.gen:
            g = g % _GEN_MAX + 1
        self.gen = g
        self.next_seq = 1
        self.intro_left = 0    # signed readings carry the generation only with the introduction

    def write_refusal(self, now=None):
        """Why this member cannot publish now (a sentence), or None."""
        if not self.can_write:
            return "this member holds no write capability"
        cap = self.capability
        if now is not None and cap is not None and cap[3] and now >= cap[3]:
            return "write capability expired at %d (now %d); ask the admin for a new invite" % (cap[3], now)
        return None

    def seq_block(self, n, rand32):
        """The sequence number of the first of ``n`` publications about to
        be sealed (generation and counter); draws the next generation from
        ``rand32`` when this one has fewer than ``n`` numbers left, so a
        batch never straddles two generations. ``seq_used`` commits."""
        if self.next_seq + n - 1 > COUNTER_MAX:
            self.new_generation(api.sha256(_GEN_LABEL + bytes(rand32)))
        return (self.gen << COUNTER_BITS) | self.next_seq

    def seq_used(self, seq, n):
        self.next_seq = (seq & COUNTER_MAX) + n

    def epochs(self):
        return self._epochs

    def reintroduce(self):
        """Put our introduction (key, capability) in the next compact
        message: called for every new link to a proxy (readings.py)."""
        self.intro_left = 0

    def set_dictionary(self, entries):
        """Byte strings our readings repeat (wire.DICT_MAX of wire.DICT_ENTRY_MIN..
        DICT_ENTRY_MAX bytes; the rest are dropped): a changed dictionary goes
        out in the next message's introduction, before any reading uses it."""
        d = []
        for e in entries:
            if wire.DICT_ENTRY_MIN <= len(e) <= wire.DICT_ENTRY_MAX and len(d) < wire.DICT_MAX:
                d.append(bytes(e))
        if d != self.dictionary:
            self.dictionary = d
            self.intro_left = 0

    # -- publishing --

    def seal(self, body, rand32, now=None):
        """Encrypt and sign ``body`` for the current epoch (group_pub);
        ``rand32`` is 32 fresh random bytes (a nonce, or an ephemeral key for
        write-only members). With ``now`` (seconds), refuses to publish on an
        expired capability, which readers would reject anyway. Returns the
        message bytes and advances the sequence number. (groups/pub.py, loaded
        on first use: a sensor node seals readings, group_rs.)"""
        from shared_protocol.groups import pub
        return pub.seal(self, body, rand32, now)

    def seal_reading(self, body, rand32, now=None):
        """``body`` as a signed reading (group_rs, readings.py)."""
        return readings.seal_rs(self, [body], False, rand32, now, SEQ_MAX)

    def seal_batch(self, bodies, rand32, now=None):
        """1..wire.BATCH_MAX bodies in one group_rs under one signature."""
        return readings.seal_rs(self, bodies, True, rand32, now, SEQ_MAX)

    def seal_compact(self, bodies, batch, rand32, now=None):
        """The earlier compact form (group_rd: random nonce, AEAD tag), which
        members still open."""
        from shared_protocol.groups import compact
        return compact.seal(self, bodies, batch, rand32, now, SEQ_MAX)

    # -- receiving --

    def open(self, data, now):
        """A Publication or EpochChanged event; raises a GroupError (or a
        cbor/envelope decode error) and changes nothing if anything is off."""
        if len(data) > wire.GROUP_MESSAGE_MAX:
            raise gerr.TooLarge(message=__debug__ and "group message of %d bytes over %d" % (len(data), wire.GROUP_MESSAGE_MAX))
        msg = envelope.REGISTRY.decode(data)
        if msg.type is wire.RS:
            return readings.open_rs(self, msg, now, SEQ_MAX, Publication)
        if msg.type is wire.RD:
            from shared_protocol.groups import compact
            return compact.open_rd(self, msg, now, SEQ_MAX, Publication)
        if msg.type is not wire.PUB and msg.type is not wire.REKEY:
            raise gerr.Malformed(message=__debug__ and "%s is not a group message" % msg.name)
        if msg.values[0] != self.topic:
            raise gerr.WrongTopic(message=__debug__ and "message is for another topic")
        if msg.type is wire.PUB:
            from shared_protocol.groups import pub   # (loaded on first use, as seal)
            return pub.open_pub(self, msg, now)
        return self._apply_rekey(msg)

    def window_for(self, author, seq):
        """The replay window of ``author``'s generation of ``seq`` (a new
        one, not yet kept, for a generation not seen before)."""
        win = self._windows.get(window_key(author, seq >> COUNTER_BITS))
        if win is None:
            if self._window_to_evict(author) is None and len(self._windows) >= AUTHORS_MAX:
                raise gerr.TooLarge(message=__debug__ and "more than %d authors in one topic" % AUTHORS_MAX)
            win = ReplayWindow(SEQ_WINDOW)
        return win

    def keep_window(self, author, win, seq):
        wkey = window_key(author, seq >> COUNTER_BITS)
        if wkey not in self._windows:
            evict = self._window_to_evict(author)
            if evict is not None:
                del self._windows[evict]
                self._wused.pop(evict, None)
        self._windows[wkey] = win
        self._wclock += 1
        self._wused[wkey] = self._wclock

    def _window_to_evict(self, author):
        """The author's least recently used window if it has its maximum of
        generations already, else None."""
        author = bytes(author)
        mine = [k for k in self._windows if k[:KEY_SIZE] == author]
        if len(mine) < GENS_PER_AUTHOR_MAX:
            return None
        best = None
        for k in mine:
            if best is None or self._wused.get(k, 0) < self._wused.get(best, 0):
                best = k
        return best

    def _apply_rekey(self, msg):
        # Re-keys are rare (a member removed): their code is imported when
        # one arrives (groups/rekey.py), not kept in every node's heap.
        from shared_protocol.groups import rekey
        return rekey.apply(self, msg)

    def forget_received(self):
        """Forget which publications were opened (the replay windows).

        For a member whose replica was lost: the windows say which
        publications reached that replica, so they go with it, or the
        history a proxy delivers again would be refused as replays. The
        replica's own check on (author, seq) still drops any duplicate op,
        and every other check of ``open`` (AEAD, signature, capability)
        stays. Nothing else changes: our own next_seq is kept.
        """
        self._windows = {}
        self._wused = {}

    # -- persistence (a CBOR-able map; keys sorted by the codec) --

    def to_record(self):
        epochs = []
        for n in sorted(self._epochs):
            ek = self._epochs[n]
            epochs.append([n, ek.secret, ek.public])
        windows = []
        for a in sorted(self._windows):
            w = self._windows[a]
            windows.append([a, w.top, w.seen, self._wused.get(a, 0)])
        return {
            "topic_public": self.topic_public, "seed": self.identity.seed, "name": self.name,
            "capability": self.capability, "epoch": self.epoch, "epochs": epochs,
            "revoked": sorted(self.revoked), "windows": windows, "next_seq": self.next_seq,
            "gen": self.gen, "wclock": self._wclock,
            "authors": authors_to_record(self.authors), "dicts": dicts_to_record(self.dicts),
            "gens": gens_to_record(self.gens),
        }

    @classmethod
    def from_record(cls, r):
        """The member a record (to_record) holds. groups/record.py, loaded
        when a stored member is read: at a board's boot, which then drops
        it (firmware/runtime.py BOOT_ONLY)."""
        from shared_protocol.groups import record
        return record.member_from_record(cls, r)

