"""The host topic layer as the bridge uses it: upsycle.group_codec opens
and seals (so changes to how members open publications and apply re-keys
reach the bridge unchanged), with two additions: the member-state saves
that opening makes are held until the bridge's flush, and each opened body
says which member key signed it.
"""
from upsycle.group_codec import GroupCodec
from upsycle.topic_store import TopicStore


class SaveAtFlush(TopicStore):
    """The topic store, with the saves that opening a delivery makes (the
    replay window moved) held until the bridge's flush: that write then
    goes to disk with the replica, before the proxy is told, instead of one
    fsync per reading (which held the bridge to ~50 readings/s). A crash
    before the flush loses nothing: the proxy delivers those again, and
    the window on disk had not seen them."""

    def __init__(self, home):
        super().__init__(home)
        self.held = {}

    def save(self, m):
        self.held[(m.topic, m.identity.public)] = m

    def flush(self):
        held, self.held = self.held, {}
        for m in held.values():
            TopicStore.save(self, m)


class Opened(bytes):
    """A publication's body, with the member key that signed it."""
    signer = None


class BridgeCodec(GroupCodec):
    """The host codec, and who signed each body: a re-key names the removed
    members by key, and the bridge removes the devices whose readings those
    keys signed."""

    def __init__(self, store):
        super().__init__(store)
        self._signers = []
        for m in self._members.values():
            # The replay windows on disk may have seen publications the
            # bridge had not acknowledged when it stopped (they are one
            # object for all deliveries, saved with the latest): the proxy
            # delivers those again and they must open. The bridge's DMC
            # replica drops what it already holds, as it does for a board's
            # refill (Member.forget_received); every other check stays.
            m.forget_received()
            m.open = self._recording(m.open)

    def _recording(self, open_):
        def opened(data, now):
            ev = open_(data, now)
            pubs = getattr(ev, "publications", None)     # a batch of readings
            self._signers = [getattr(p, "author", None) for p in pubs] if pubs is not None else [
                getattr(ev, "author", None)]
            return ev
        return opened

    def decode(self, topic_id, payload):
        """What GroupCodec.decode gives (a body, a batch's list of bodies,
        an EpochChanged or a Rejected), each body an ``Opened``."""
        self._signers = []
        out = super().decode(topic_id, payload)
        if isinstance(out, bytes):
            return self._opened(out, self._signers[0] if self._signers else None)
        if isinstance(out, list):
            signers = self._signers if len(self._signers) == len(out) else [None] * len(out)
            return [self._opened(b, a) for b, a in zip(out, signers)]
        return out

    @staticmethod
    def _opened(body, signer):
        o = Opened(body)
        o.signer = None if signer is None else bytes(signer)
        return o

    def encode(self, topic_id, data):
        # A seal advances the group sequence number: it must be on disk
        # before the publication leaves, or a restart would reuse it.
        out = super().encode(topic_id, data)
        self.store.flush()
        return out
