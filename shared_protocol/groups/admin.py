"""The admin of a topic: the holder of the topic's key pair. Issues invites
(with write capabilities) and removes members by re-keying.

Removal (issue: "a removed member cannot read what comes after"): the admin
draws a new epoch secret and sends it in one ``group_rekey`` message through
the topic itself. The message carries one entry per remaining member, each
sealed to that member's key: X25519 between one ephemeral key and the
member's key (its Ed25519 key in X25519 form), HKDF, ChaCha20-Poly1305.
Entries carry no recipient name, and are sorted by their bytes, so a proxy
learns only how many members remain; each member finds its entry by trial
decryption (one X25519, then one AEAD check per entry). The entry also lists
the removed keys, so members refuse the removed author's publications in
every epoch, including old ones it could still encrypt to.

A re-key larger than the proxy's payload limit (more than ~7 remaining
members) is split into parts of at most ``wire.REKEY_PART_MAX`` bytes, each
signed on its own; a member applies the part that holds its entry.

The admin keeps its last ``KEPT_REKEYS_MAX`` re-keys with the time each was
last published (0: not yet): that is the outbox a host publishes from
(``rekeys_due``), and the chain it publishes again so that a member that
missed a re-key (offline longer than the proxy keeps history) catches up.
Members apply re-keys in epoch order only (``RekeyGap``), so the chain is
always sent oldest first.
"""
from shared_protocol.wire import cbor, envelope
from shared_protocol.crypto import api
from shared_protocol.groups import wire
from shared_protocol.groups import errors as gerr
from shared_protocol.groups.keys import (EPOCH_MAX, NO_EXPIRY, RIGHT_READ, RIGHT_WRITE, SIG_SIZE, EpochKey,
                                         Identity, make_capability)
from shared_protocol.groups.member import KEPT_EPOCHS_MAX, Member
from shared_protocol.groups.rekey import rekey_entry_key

_ZERO_NONCE = b"\x00" * wire.NONCE_SIZE
# Re-keys kept to publish again: a member more removals behind than this
# needs a new invite. A re-key is 1-16 KiB (1-16 parts), so at most ~128 KiB.
KEPT_REKEYS_MAX = 8


def split_rekey(topic, epoch, eph, entries, sign):
    """The group_rekey parts for ``entries``: each at most REKEY_PART_MAX
    bytes, each signed by ``sign`` over its own part number and count."""
    probe_sig = b"\x00" * SIG_SIZE
    groups, cur = [], []
    for e in entries:
        trial = cur + [e]
        size = len(envelope.REGISTRY.encode("group_rekey", topic, epoch, eph, wire.REKEY_PARTS_MAX - 1,
                                            wire.REKEY_PARTS_MAX, trial, probe_sig))
        if size > wire.REKEY_PART_MAX and cur:
            groups.append(cur)
            cur = [e]
        else:
            cur = trial
    groups.append(cur)
    if len(groups) > wire.REKEY_PARTS_MAX:
        raise gerr.GroupUsageError(message=__debug__ and "re-key needs %d parts, over %d" % (len(groups), wire.REKEY_PARTS_MAX))
    out = []
    n = len(groups)
    for i in range(n):
        sig = sign(wire.rekey_signed_bytes(topic, epoch, eph, i, n, groups[i]))
        out.append(envelope.REGISTRY.encode("group_rekey", topic, epoch, eph, i, n, groups[i], sig))
    return out


class Admin(Member):
    def __init__(self, topic_seed, epoch_secret, epoch=0, name=""):
        topic_public = api.ed25519_public(topic_seed)
        Member.__init__(self, topic_public, topic_seed, epoch, epoch_secret, None, None, name)
        # member key -> [rights, X25519 form of the key]
        self.members = {}
        # [epoch, [part bytes...], when last published (0: not yet)], oldest first
        self.rekeys = []

    def add_member(self, member_public, rights):
        if len(self.members) >= wire.MEMBERS_MAX:
            raise gerr.GroupUsageError(message=__debug__ and "topic already has %d members" % wire.MEMBERS_MAX)
        if not rights & (RIGHT_READ | RIGHT_WRITE):
            raise gerr.GroupUsageError(message=__debug__ and "a member needs read, write or both")
        # converting costs one scalar multiplication: do it once, at invite time
        self.members[bytes(member_public)] = [rights, api.ed25519_pk_to_x25519(member_public)]

    def invite(self, member_seed, read=True, write=False, expiry=NO_EXPIRY):
        """An invite (bytes) for a new member key made from ``member_seed``.
        The invite is a secret: whoever holds it becomes that member."""
        from shared_protocol.groups.invite import encode_invite
        rights = (RIGHT_READ if read else 0) | (RIGHT_WRITE if write else 0)
        member = Identity(member_seed)
        self.add_member(member.public, rights)
        cap = make_capability(self.identity, member.public, rights, expiry) if write else None
        ek = self.epoch_key()
        return encode_invite(self.topic_public, member.seed, self.epoch,
                             ek.secret if read else None, ek.public, cap, self.name)

    def remove(self, member_public, new_secret, ephemeral_secret):
        """Remove a member: returns the group_rekey parts (a list of messages,
        one for up to ~7 remaining members) to publish, keeps them as not yet
        published (``rekeys``) and switches the admin to the new epoch. Both
        secrets are 32 fresh random bytes from the caller."""
        member_public = bytes(member_public)
        if member_public not in self.members:
            raise gerr.GroupUsageError(message=__debug__ and "not a member of this topic")
        if self.epoch >= EPOCH_MAX:
            raise gerr.GroupUsageError(message=__debug__ and "epoch numbers exhausted")
        epoch = self.epoch + 1
        topic = self.topic
        new = EpochKey(topic, epoch, new_secret)
        eph = api.x25519_public(ephemeral_secret)
        aad = cbor.encode([topic, epoch, eph])
        removed = [member_public]
        entries = []
        for pub in sorted(self.members):
            if pub == member_public:
                continue
            rights, xpub = self.members[pub]
            content = cbor.encode([new.secret if rights & RIGHT_READ else None, new.public, removed])
            key = rekey_entry_key(api.x25519(ephemeral_secret, xpub), topic, epoch, eph, xpub)
            entries.append(api.aead_encrypt(key, _ZERO_NONCE, content, aad))
        entries.sort()
        parts = split_rekey(topic, epoch, eph, entries, self.identity.sign)
        # apply locally
        del self.members[member_public]
        self._epochs[epoch] = new
        self.epoch = epoch
        for old in sorted(self._epochs)[:-KEPT_EPOCHS_MAX]:
            del self._epochs[old]
        self.revoked.add(member_public)
        self.rekeys.append([epoch, parts, 0])
        del self.rekeys[:-KEPT_REKEYS_MAX]
        return parts

    # -- the re-key outbox --

    def rekeys_due(self, now, resend_s):
        """[(epoch, part)...] to publish now, oldest first: the re-keys never
        published; or, when every one was and the oldest publication is
        ``resend_s`` old, the whole kept chain again (a member offline
        longer than the proxy's history catches up from it)."""
        unsent = [r for r in self.rekeys if not r[2]]
        if not unsent and self.rekeys and now - min(r[2] for r in self.rekeys) >= resend_s:
            unsent = self.rekeys
        return [(r[0], p) for r in unsent for p in r[1]]

    def rekeys_published(self, epochs, now):
        """The proxy acknowledged the re-keys of ``epochs`` at ``now``."""
        for r in self.rekeys:
            if r[0] in epochs:
                r[2] = now

    def resend_rekeys(self):
        """Publish the whole chain again at the next chance (a member was
        seen publishing in an old epoch: it missed a re-key)."""
        for r in self.rekeys:
            r[2] = 0

    def to_record(self):
        r = Member.to_record(self)
        r["members"] = [[k, v[0]] for k, v in sorted(self.members.items())]
        r["rekeys"] = self.rekeys
        return r

    @classmethod
    def from_record(cls, r):
        m = Member.from_record(r)
        a = cls(r["seed"], m.epoch_key().secret, m.epoch, r["name"])
        a._epochs = m._epochs
        a.revoked = m.revoked
        a._windows = m._windows
        a.authors = m.authors
        a.dicts = m.dicts
        a.gens = m.gens
        a.next_seq = m.next_seq
        a.gen = m.gen
        a._wused = m._wused
        a._wclock = m._wclock
        a.rekeys = [[e, [bytes(p) for p in parts], t] for e, parts, t in r.get("rekeys", [])]
        for k, rights in r["members"]:
            a.add_member(k, rights)
        return a
