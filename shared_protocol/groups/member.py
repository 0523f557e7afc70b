"""A member's view of one private topic: seal publications, open them, apply
re-keys. Sans-I/O: the caller passes the current time (seconds) and fresh
random bytes in; the object keeps the keys and the replay state, which the
caller persists with ``to_record``.

Opening checks everything before changing anything: size, envelope, topic,
epoch, AEAD tag, structure, revocation, author signature, write capability,
replay. Only then does the (author, seq) window advance.
"""
from shared_protocol.wire import cbor, envelope
from shared_protocol.crypto import api
from shared_protocol.crypto.errors import AuthenticationFailed, BadPublicKey
from shared_protocol.crypto.errors import BadSignature as CryptoBadSignature
from shared_protocol.groups import wire
from shared_protocol.groups.errors import (BadSignature, DecryptFailed, GroupUsageError, Malformed, MemberRevoked,
                                           NoReadCapability, RemovedFromTopic, Replayed, StaleEpoch, TooLarge,
                                           UnknownEpoch, WrongTopic)
from shared_protocol.groups.keys import (KEY_SIZE, SIG_SIZE, EpochKey, Identity, capability_from_wire,
                                         capability_on_wire, check_write_capability, topic_id)
from shared_protocol.replay import ReplayWindow

# Epochs kept after a re-key, so publications sealed just before it (still in
# a proxy's queue) stay readable. Removed authors are refused in every epoch.
MAX_KEPT_EPOCHS = 3
# Distinct authors with replay state. Every author needs an admin-signed
# capability, so the admin bounds this; twice the member limit leaves room
# for members replaced over time.
MAX_AUTHORS = 2 * wire.MAX_MEMBERS
# Removed member keys remembered (one per removal).
MAX_REVOKED = 256
# Publications per author accepted out of order (and remembered as seen).
SEQ_WINDOW = 64
MAX_SEQ = 0xFFFFFFFFFFFF
_PUB_DH_LABEL = b"upsycle-pub-dh-v1"
_REKEY_LABEL = b"upsycle-rekey-entry-v1"
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


def _pub_dh_key(shared, topic, epoch, eph, epoch_public):
    return api.hkdf(topic, shared, _PUB_DH_LABEL + epoch.to_bytes(4, "big") + eph + epoch_public, 32)


def rekey_entry_key(shared, topic, epoch, eph, member_x25519_public):
    # Each entry key is unique to (ephemeral, member), so entries use the
    # all-zero nonce safely: a key is never used twice.
    return api.hkdf(topic, shared, _REKEY_LABEL + epoch.to_bytes(4, "big") + eph + member_x25519_public, 32)


def _is_key(v, size=KEY_SIZE):
    return isinstance(v, (bytes, bytearray)) and len(v) == size


class Member:
    def __init__(self, topic_public, member_seed, epoch, epoch_secret=None, epoch_public=None,
                 capability=None, name=""):
        if not _is_key(topic_public):
            raise Malformed(message="topic public key must be 32 bytes")
        self.topic_public = bytes(topic_public)
        self.topic = topic_id(self.topic_public)
        self.identity = Identity(member_seed)
        self.name = name
        self.capability = capability
        self.epoch = epoch
        self._epochs = {epoch: EpochKey(self.topic, epoch, epoch_secret, epoch_public)}
        self.revoked = set()
        self._windows = {}
        self.next_seq = 1

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

    # -- publishing --

    def seal(self, body, rand32, now=None):
        """Encrypt and sign ``body`` for the current epoch; ``rand32`` is 32
        fresh random bytes (a nonce, or an ephemeral key for write-only
        members). With ``now`` (seconds), refuses to publish on an expired
        capability, which readers would reject anyway. Returns the message
        bytes and advances the sequence number."""
        if not self.can_write:
            raise GroupUsageError(message="this member holds no write capability")
        cap = self.capability
        if now is not None and cap is not None and cap[3] and now >= cap[3]:
            raise GroupUsageError(message="write capability expired; ask the admin for a new invite")
        if len(body) > wire.MAX_BODY:
            raise GroupUsageError(message="body of %d bytes over %d" % (len(body), wire.MAX_BODY))
        if not _is_key(rand32):
            raise GroupUsageError(message="seal needs 32 random bytes")
        if self.next_seq > MAX_SEQ:
            raise GroupUsageError(message="sequence numbers exhausted for this member key")
        ek = self._epochs[self.epoch]
        seq = self.next_seq
        author = self.identity.public
        sig = self.identity.sign(wire.pub_signed_bytes(self.topic, self.epoch, author, seq, body))
        inner = cbor.encode([author, seq, None if self.is_admin else capability_on_wire(self.capability), body, sig])
        if ek.readable:
            # Readers seal with the epoch key and a random 96-bit nonce; nonces
            # are not counters because many authors share the key (RFC 8439 §4:
            # a nonce must never repeat under one key).
            mode, kfield = wire.MODE_EPOCH_KEY, rand32[:wire.NONCE_SIZE]
            key, nonce = ek.sym, kfield
        else:
            # Write-only: ephemeral-static DH to the epoch public key; the key
            # is fresh per message, so the nonce can be fixed.
            mode, kfield = wire.MODE_EPOCH_PUBLIC, api.x25519_public(rand32)
            key = _pub_dh_key(api.x25519(rand32, ek.public), self.topic, self.epoch, kfield, ek.public)
            nonce = _ZERO_NONCE
        aad = wire.pub_header(self.topic, self.epoch, mode, kfield)
        sealed = api.aead_encrypt(key, nonce, inner, aad)
        self.next_seq = seq + 1
        return envelope.REGISTRY.encode("group_pub", self.topic, self.epoch, mode, kfield, sealed)

    # -- receiving --

    def open(self, data, now):
        """A Publication or EpochChanged event; raises a GroupError (or a
        cbor/envelope decode error) and changes nothing if anything is off."""
        if len(data) > wire.MAX_GROUP_MESSAGE:
            raise TooLarge(message="group message of %d bytes over %d" % (len(data), wire.MAX_GROUP_MESSAGE))
        msg = envelope.REGISTRY.decode(data)
        if msg.type is not wire.PUB and msg.type is not wire.REKEY:
            raise Malformed(message="%s is not a group message" % msg.name)
        if msg.values[0] != self.topic:
            raise WrongTopic(message="message is for another topic")
        if msg.type is wire.PUB:
            return self._open_pub(msg, now)
        return self._apply_rekey(msg)

    def _open_pub(self, msg, now):
        topic, epoch, mode, kfield, sealed = msg.values
        ek = self._epochs.get(epoch)
        if ek is None:
            raise UnknownEpoch(message="epoch %d not held (current %d)" % (epoch, self.epoch))
        if not ek.readable:
            raise NoReadCapability(message="write-only member: cannot open publications")
        aad = wire.pub_header(topic, epoch, mode, kfield)
        try:
            if mode == wire.MODE_EPOCH_KEY:
                if len(kfield) != wire.NONCE_SIZE:
                    raise Malformed(message="nonce must be 12 bytes")
                inner = api.aead_decrypt(ek.sym, kfield, sealed, aad)
            else:
                if not _is_key(kfield):
                    raise Malformed(message="ephemeral key must be 32 bytes")
                key = _pub_dh_key(api.x25519(ek.dh_secret, kfield), topic, epoch, kfield, ek.public)
                inner = api.aead_decrypt(key, _ZERO_NONCE, sealed, aad)
        except (AuthenticationFailed, BadPublicKey):
            raise DecryptFailed(message="publication does not authenticate under epoch %d" % epoch)
        v = cbor.decode(inner)
        if (not isinstance(v, list) or len(v) != 5 or not _is_key(v[0]) or not isinstance(v[1], int)
                or isinstance(v[1], bool) or not 0 < v[1] <= MAX_SEQ
                or not isinstance(v[3], (bytes, bytearray)) or len(v[3]) > wire.MAX_BODY or not _is_key(v[4], SIG_SIZE)):
            raise Malformed(message="publication content has the wrong shape")
        author, seq, cap, body, sig = v
        if author in self.revoked:
            raise MemberRevoked(message="author was removed from the topic")
        try:
            api.ed25519_verify(author, wire.pub_signed_bytes(topic, epoch, author, seq, body), sig)
        except CryptoBadSignature:
            raise BadSignature(message="author signature does not verify")
        if author != self.topic_public:
            check_write_capability(capability_from_wire(cap, topic, author), topic, self.topic_public, author, now)
        win = self._windows.get(author)
        if win is None:
            if len(self._windows) >= MAX_AUTHORS:
                raise TooLarge(message="more than %d authors in one topic" % MAX_AUTHORS)
            win = ReplayWindow(SEQ_WINDOW)
        if not win.is_fresh(seq):
            raise Replayed(message="sequence %d of this author already seen or too old" % seq)
        # every check passed: commit
        win.accept(seq)
        self._windows[author] = win
        return Publication(topic, epoch, author, seq, body)

    def _apply_rekey(self, msg):
        topic, epoch, eph, entries, sig = msg.values
        if epoch <= self.epoch:
            raise StaleEpoch(message="re-key to epoch %d, already at %d" % (epoch, self.epoch))
        if not _is_key(eph) or len(sig) != SIG_SIZE:
            raise Malformed(message="re-key fields have wrong sizes")
        for e in entries:
            if not isinstance(e, (bytes, bytearray)) or len(e) > wire.REKEY_ENTRY_MAX:
                raise Malformed(message="re-key entry malformed")
        try:
            api.ed25519_verify(self.topic_public, wire.rekey_signed_bytes(topic, epoch, eph, entries), sig)
        except CryptoBadSignature:
            raise BadSignature(message="re-key not signed by the topic admin")
        me = self.identity
        try:
            my_x = api.x25519_public(me.x25519_secret)
            key = rekey_entry_key(api.x25519(me.x25519_secret, eph), topic, epoch, eph, my_x)
        except BadPublicKey:
            raise Malformed(message="re-key ephemeral key has small order")
        aad = cbor.encode([topic, epoch, eph])
        content = None
        for e in entries:
            try:
                content = api.aead_decrypt(key, _ZERO_NONCE, e, aad)
                break
            except AuthenticationFailed:
                continue
        if content is None:
            raise RemovedFromTopic(message="re-key to epoch %d has no entry for this member" % epoch)
        v = cbor.decode(content)
        if (not isinstance(v, list) or len(v) != 3 or not (v[0] is None or _is_key(v[0])) or not _is_key(v[1])
                or not isinstance(v[2], list) or len(v[2]) > wire.MAX_REMOVED_PER_REKEY
                or not all(_is_key(k) for k in v[2])):
            raise Malformed(message="re-key entry content has the wrong shape")
        new = EpochKey(topic, epoch, v[0], v[1])
        if len(self.revoked) + len(v[2]) > MAX_REVOKED:
            raise TooLarge(message="revocation list full")
        # commit
        self._epochs[epoch] = new
        self.epoch = epoch
        for old in sorted(self._epochs)[:-MAX_KEPT_EPOCHS]:
            del self._epochs[old]
        for k in v[2]:
            self.revoked.add(bytes(k))
        return EpochChanged(epoch, list(v[2]))

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

    # -- persistence (a CBOR-able map; keys sorted by the codec) --

    def to_record(self):
        epochs = []
        for n in sorted(self._epochs):
            ek = self._epochs[n]
            epochs.append([n, ek.secret, ek.public])
        windows = []
        for a in sorted(self._windows):
            w = self._windows[a]
            windows.append([a, w.top, w.seen])
        return {
            "topic_public": self.topic_public, "seed": self.identity.seed, "name": self.name,
            "capability": self.capability, "epoch": self.epoch, "epochs": epochs,
            "revoked": sorted(self.revoked), "windows": windows, "next_seq": self.next_seq,
        }

    @classmethod
    def from_record(cls, r):
        cur = None
        for n, secret, public in r["epochs"]:
            if n == r["epoch"]:
                cur = (secret, public)
        m = cls(r["topic_public"], r["seed"], r["epoch"], cur[0], cur[1], r["capability"], r["name"])
        for n, secret, public in r["epochs"]:
            m._epochs[n] = EpochKey(m.topic, n, secret, public)
        m.revoked = set(bytes(k) for k in r["revoked"])
        for a, top, seen in r["windows"]:
            m._windows[bytes(a)] = ReplayWindow(SEQ_WINDOW, top, seen)
        m.next_seq = r["next_seq"]
        return m

