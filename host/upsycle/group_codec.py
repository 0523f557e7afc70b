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
        # re-key was applied) or a Rejected (typed reason: forged, replayed,
        # removed, author not introduced yet...)

Every state change (sequence numbers, replay windows, epochs) is saved to the
topic store at once, so a restarted node neither reuses a sequence number
nor accepts a replay.
"""
import logging
import time

from shared_protocol.crypto import api
from shared_protocol.errors import UpsycleError
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.member import EpochChanged, Publication
from shared_protocol.groups.readings import Batch

log = logging.getLogger("upsycle.groups")


class Rejected:
    """A delivery that failed a group check; ``code`` says which."""

    def __init__(self, error):
        self.code = error.code
        self.message = error.message

    def __repr__(self):
        return "<Rejected %s>" % self.code


class GroupCodec:
    def __init__(self, store, clock=time.time, random_bytes=api.random_bytes):
        self.store = store
        self._clock = clock
        self._random = random_bytes
        self._members = {}
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
        if m.can_read:
            # compact reading: our key and capability travel in our first
            # message (and every readings.INTRO_EVERY), not in each one
            out = m.seal_reading(data, self._random(32), int(self._clock()))
        else:
            out = m.seal(data, self._random(32), int(self._clock()))
        self.store.save(m)
        return out

    def decode(self, topic_id, payload):
        m = self._members.get(bytes(topic_id))
        if m is None:
            return payload  # not a private topic of ours: pass through
        try:
            ev = m.open(payload, int(self._clock()))
        except UpsycleError as e:
            log.info("event=group_reject topic=%s code=%s", m.topic.hex(), e.code)
            return Rejected(e)
        self.store.save(m)
        if isinstance(ev, Publication):
            return ev.body
        if isinstance(ev, Batch):
            return [p.body for p in ev.publications]
        return ev


__all__ = ["GroupCodec", "Rejected", "EpochChanged"]
