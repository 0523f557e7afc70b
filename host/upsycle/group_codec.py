"""Private topics for the async client: the payload codec that seals what an
app publishes and opens what the proxy delivers (upsycle.client's codec
seam). The proxy only ever stores and forwards the sealed bytes.

    codec = GroupCodec(TopicStore(home_dir()))
    async with Client(host, port, codec=codec) as c:
        await c.subscribe(codec.topic_id("garden"))
        await c.publish(codec.topic_id("garden"), b"21.5C")
        d = await c.next_delivery()
        # d.payload: bytes (a publication's body), a list of bytes (the
        # readings of a batch, docs/private-groups.md), an EpochChanged (a
        # re-key was applied), a Held (kept until its re-key arrives) or a
        # Rejected (typed reason: forged, replayed, removed, author not
        # introduced yet...)

Every state change (sequence numbers, replay windows, epochs, held
messages) is saved to the topic store at once, so a restarted node neither
reuses a sequence number nor accepts a replay nor loses a held message.
The client decodes a delivery when the app takes it (upsycle.client
next_delivery), so the replay window on disk has seen only what the app
took: deliveries still queued when a reader stops come again from the
proxy and open then.

Re-keys (docs/private-groups.md "Removal"):
- Applying: a delivered re-key part is applied by ``decode`` like any
  message; every client that uses this codec (the CLI's sub and pub, the
  bridge) does it.
- Held messages: a publication sealed under an epoch this member does not
  hold yet (its re-key is still on the way, or was lost from the proxy's
  history and will be sent again), or a re-key that skips one, is kept in
  the topic store (``held``, at most HELD_MAX) and reported as ``Held``;
  the client may then acknowledge it to the proxy, since it is on disk.
  When a re-key is applied, held messages are opened again in arrival
  order; those that open are handed out as ``released`` with the
  EpochChanged and leave the store only when the app has taken them
  (``taken``), so a crash in between delivers them again.
- Publishing (admin): the re-keys ``topic remove`` made and did not
  publish are the outbox (``outgoing``); the client publishes them after
  each welcome, before anything else it sends. The whole kept chain is
  published again once a day (REKEY_RESEND_S, well inside the proxy's
  default one-week history) and when a member is seen publishing in an old
  epoch (it missed a re-key), at most once a minute.
"""
import logging
import time

from shared_protocol.crypto import api
from shared_protocol.errors import UpsycleError
from shared_protocol.groups.admin import Admin
from shared_protocol.groups import errors as gerr
from shared_protocol.groups.errors import OtherRekeyPart, RemovedFromTopic, StaleEpoch
from shared_protocol.groups.member import EpochChanged, Publication
from shared_protocol.groups.readings import Batch

log = logging.getLogger("upsycle.groups")

# Messages kept per topic until their epoch's key arrives. A delivery is at
# most 1 KiB (session.messages.PAYLOAD_MAX), so a full list is ~256 KiB in the
# topic's file; past it a message that cannot open yet is dropped (logged).
HELD_MAX = 256
# The admin publishes its kept re-keys again when the last publication is
# this old: the proxy keeps a topic's history a week by default (max_age_s),
# so the chain is always in it while the admin runs at least once a week.
REKEY_RESEND_S = 86400
# Least time between two re-sends asked for by a member seen in an old
# epoch (a member that cannot catch up must not make the admin flood the
# topic at its own publication rate).
REKEY_RESEND_MIN_S = 60
# Readings kept because their author's introduction had not reached us yet
# (groups/readings.py: a reading that overtook the one carrying it, e.g. a
# board publishing through two proxies whose copies arrive by different
# paths, docs/federation.md "all"): at most this many per topic, the oldest
# dropped (logged) past it. An author introduces itself again every
# readings.INTRO_EVERY messages, so a reading that waited that many others
# out will not open any more.
INTRO_WAIT_MAX = 32
# Rejections that are expected copies, not faults: a re-key part we have
# applied (or that holds another member's entry), the admin's own re-key.
QUIET_CODES = (StaleEpoch.code, OtherRekeyPart.code)


class Rejected:
    """A delivery that failed a group check; ``code`` says which. ``quiet``:
    an expected copy (a re-key already applied), nothing to report."""

    def __init__(self, error):
        self.code = error.code
        self.message = error.message
        self.quiet = error.code in QUIET_CODES

    def __repr__(self):
        return "<Rejected %s>" % self.code


class Held:
    """A delivery kept in the topic store until its re-key arrives."""

    def __init__(self, error, count):
        self.code = error.code
        self.message = error.message
        self.count = count     # messages held for the topic now

    def __repr__(self):
        return "<Held %s>" % self.code


class GroupCodec:
    def __init__(self, store, clock=time.time, random_bytes=api.random_bytes):
        self.store = store
        self._clock = clock
        self._random = random_bytes
        self._members = {}
        self._asked_resend = {}
        self._introduced = []   # [(held id, body)] released by the last decode
        for m in store.all():
            # an admin and a membership of the same topic: the admin reads all
            if m.topic not in self._members or isinstance(m, Admin):
                self._members[m.topic] = m

    def topic_id(self, name_or_hex):
        for m in self._members.values():
            if m.name == name_or_hex or m.topic.hex() == name_or_hex:
                return m.topic
        raise KeyError("no private topic %r in %s" % (name_or_hex, self.store.dir))

    def member(self, topic_id):
        m = self._members.get(bytes(topic_id))
        if m is None:
            raise KeyError("not a member of topic %s" % bytes(topic_id).hex())
        return m

    def encode(self, topic_id, data):
        m = self.member(topic_id)
        if m.removed_at is not None:
            from shared_protocol.groups.errors import GroupUsageError
            raise GroupUsageError(message="this member was removed from topic %s (re-key to epoch %d): "
                                          "members refuse its publications" % (m.name, m.removed_at))
        if m.can_read:
            # compact reading: our key and capability travel in our first
            # message (and every readings.INTRO_EVERY), not in each one
            out = m.seal_reading(data, self._random(32), int(self._clock()))
        else:
            out = m.seal(data, self._random(32), int(self._clock()))
        self.store.save(m)
        return out

    # -- receiving --

    def decode(self, topic_id, payload):
        m = self._members.get(bytes(topic_id))
        if m is None:
            return payload  # not a private topic of ours: pass through
        now = int(self._clock())
        self._introduced = []
        try:
            ev = m.open(payload, now)
        except UpsycleError as e:
            return self._refused(m, payload, e)
        if isinstance(ev, Publication):
            if isinstance(m, Admin) and ev.epoch < m.epoch and m.rekeys and ev.author != m.identity.public:
                self._member_behind(m, now)
            self._retry_introduced(m, now)
            self.store.save(m)
            return ev.body
        if isinstance(ev, Batch):
            self._retry_introduced(m, now)
            self.store.save(m)
            return [p.body for p in ev.publications]
        ev.released = self._retry_held(m, now)
        self.store.save(m)
        log.info("event=group_rekey topic=%s epoch=%d released=%d", m.topic.hex(), ev.epoch, len(ev.released))
        return ev

    def _refused(self, m, payload, e):
        if isinstance(e, RemovedFromTopic):
            # a valid re-key (admin-signed) without us: what waits for a
            # newer epoch will never open
            m.removed_at = m.epoch + 1
            m.held = [h for h in m.held if h[2] is not None]
            self.store.save(m)
        elif isinstance(e, gerr.AuthorUnknown) and m.removed_at is None:
            waiting = [h for h in m.held if h[2] is None and len(h) > 3]
            if len(waiting) >= INTRO_WAIT_MAX:
                m.held.remove(waiting[0])
                log.warning("event=group_intro_wait_full topic=%s limit=%d dropped=%d",
                            m.topic.hex(), INTRO_WAIT_MAX, waiting[0][0])
            m.held.append([m.held_next, bytes(payload), None, e.code])
            m.held_next += 1
            self.store.save(m)
            log.info("event=group_held topic=%s code=%s held=%d", m.topic.hex(), e.code, len(m.held))
            return Held(e, len(m.held))
        elif getattr(e, "may_clear", False) and m.removed_at is None:
            if len(m.held) < HELD_MAX:
                m.held.append([m.held_next, bytes(payload), None])
                m.held_next += 1
                self.store.save(m)
                log.info("event=group_held topic=%s code=%s held=%d", m.topic.hex(), e.code, len(m.held))
                return Held(e, len(m.held))
            log.warning("event=group_held_full topic=%s code=%s limit=%d", m.topic.hex(), e.code, HELD_MAX)
        if e.code not in QUIET_CODES:
            log.info("event=group_reject topic=%s code=%s", m.topic.hex(), e.code)
        return Rejected(e)

    def _retry_introduced(self, m, now):
        """A reading opened: the introduction it may have carried can open
        readings kept for want of it (they are handed out by
        ``take_introduced``, after the one that opened)."""
        for h in m.held:
            if h[2] is None and len(h) > 3:
                break
        else:
            return
        self._introduced = self._retry_held(m, now, intro_only=True)

    def take_introduced(self):
        """[(held id, body)] of the readings the last ``decode`` released
        (their author's introduction came with it), in arrival order: the
        client hands them out right after that delivery, and the app's
        ``taken`` forgets them (until then ``ready`` lists them again)."""
        out, self._introduced = self._introduced, []
        return out

    def _retry_held(self, m, now, intro_only=False):
        """Open held messages again (a re-key was applied, or with
        ``intro_only`` an author's introduction came): returns
        [(held id, body)] of those that open now, in arrival order."""
        released = []
        progress = True
        while progress:       # a held re-key that applies may free more
            progress = False
            keep = []
            for h in m.held:
                if h[2] is not None or (intro_only and len(h) < 4):
                    keep.append(h)
                    continue
                try:
                    ev = m.open(h[1], now)
                except UpsycleError as e:
                    if getattr(e, "may_clear", False) or isinstance(e, gerr.AuthorUnknown):
                        keep.append(h)
                    else:
                        log.info("event=group_held_drop topic=%s code=%s", m.topic.hex(), e.code)
                    continue
                if isinstance(ev, (Publication, Batch)):
                    h[2] = ev.body if isinstance(ev, Publication) else [p.body for p in ev.publications]
                    keep.append(h)
                    released.append((h[0], h[2]))
                    # a kept reading may carry the introduction another waits for
                    progress = progress or intro_only
                else:
                    progress = True
            m.held = keep
        return released

    def ready(self, topic_id):
        """[(held id, body)] opened but not yet taken by the app (a client
        that stopped after a re-key released them hands them out again)."""
        m = self._members.get(bytes(topic_id))
        return [] if m is None else [(h[0], h[2]) for h in m.held if h[2] is not None]

    def taken(self, topic_id, held_id):
        """The app has taken the released message ``held_id``: forget it."""
        m = self._members.get(bytes(topic_id))
        if m is None:
            return
        keep = [h for h in m.held if h[0] != held_id]
        if len(keep) != len(m.held):
            m.held = keep
            self.store.save(m)

    # -- the admin's re-key outbox --

    def _member_behind(self, admin, now):
        last = self._asked_resend.get(admin.topic, 0)
        if now - last >= REKEY_RESEND_MIN_S:
            self._asked_resend[admin.topic] = now
            admin.resend_rekeys()
            log.info("event=group_rekey_resend topic=%s reason=member_in_old_epoch", admin.topic.hex())

    def outgoing(self):
        """[(topic id, [(epoch, re-key part bytes)...])] to publish now."""
        now = int(self._clock())
        out = []
        for tid in sorted(self._members):
            m = self._members[tid]
            if isinstance(m, Admin):
                due = m.rekeys_due(now, REKEY_RESEND_S)
                if due:
                    out.append((tid, due))
        return out

    def published(self, topic_id, epochs):
        """The proxy acknowledged the re-key parts of ``epochs``."""
        m = self.member(topic_id)
        m.rekeys_published(set(epochs), int(self._clock()))
        self.store.save(m)


__all__ = ["GroupCodec", "Rejected", "Held", "EpochChanged"]
