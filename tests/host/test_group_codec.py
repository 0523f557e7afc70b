"""The host's payload codec speaks signed readings (group_rs; it opens the earlier group_rd too): what
`upsycle pub`/`sub` and the async client send and take."""
import os

from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url, member_from_url
from shared_protocol.wire import envelope as E
from upsycle.group_codec import INTRO_WAIT_MAX, GroupCodec, Held, Rejected
from upsycle.topic_store import TopicStore


def _homes(tmp_path):
    admin = Admin(os.urandom(32), os.urandom(32), name="garden")
    stores = {}
    for name in ("alice", "bob", "carol"):
        stores[name] = TopicStore(str(tmp_path / name))
    stores["alice"].save(admin)
    for name in ("bob", "carol"):
        stores[name].save(member_from_url(invite_url(admin.invite(os.urandom(32), read=True, write=True))))
    return admin.topic, stores


def test_codec_seals_compact_readings_and_opens_batches(tmp_path):
    tid, stores = _homes(tmp_path)
    alice, bob = GroupCodec(stores["alice"]), GroupCodec(stores["bob"])
    first = bob.encode(tid, b"soil=31%")
    assert E.REGISTRY.decode(first).name == "group_rs"
    second = bob.encode(tid, b"soil=30%")
    assert len(second) < len(first) - 90          # key and capability only in the first
    assert alice.decode(tid, first) == b"soil=31%"
    # alice's store remembers bob's introduction: a new process opens the second
    assert GroupCodec(stores["alice"]).decode(tid, second) == b"soil=30%"
    # a batch opens as the list of its readings
    m = bob.member(tid)
    batch = m.seal_batch([b"a", b"b", b"c"], os.urandom(32), 0)
    stores["bob"].save(m)
    assert GroupCodec(stores["alice"]).decode(tid, batch) == [b"a", b"b", b"c"]


def test_codec_rejects_a_reading_whose_author_it_cannot_prove(tmp_path):
    tid, stores = _homes(tmp_path)
    carol = GroupCodec(stores["carol"]).member(tid)
    carol.intro_left = 5                           # as if introduced on an earlier link we never saw
    data = carol.seal_reading(b"who?", os.urandom(32), 0)
    r = GroupCodec(stores["alice"]).decode(tid, data)
    # not accepted: kept (on disk) in case its introduction is still on the way
    assert isinstance(r, Held) and r.code == "group_author_unknown"
    assert GroupCodec(stores["alice"]).ready(tid) == []


def test_a_reading_that_overtook_its_introduction_opens_when_it_comes(tmp_path):
    # A board publishing through two proxies: its second reading reached a
    # reader's proxy (by the mirror) before the first, which carries the
    # introduction (by federation). Refusing it for good would lose it and
    # stall the reader's replica on that author's gap.
    tid, stores = _homes(tmp_path)
    bob = GroupCodec(stores["bob"])
    first, second, third = (bob.encode(tid, b"t=%d" % i) for i in range(3))
    alice = GroupCodec(stores["alice"])
    assert isinstance(alice.decode(tid, second), Held)
    assert isinstance(alice.decode(tid, third), Held)
    assert alice.take_introduced() == []
    # kept on disk: a restart in between loses nothing
    alice = GroupCodec(stores["alice"])
    assert alice.decode(tid, first) == b"t=0"
    got = alice.take_introduced()
    assert [b for _, b in got] == [b"t=1", b"t=2"]       # in arrival order
    assert alice.take_introduced() == []
    # handed out again after a crash until the app has taken them
    assert [b for _, b in GroupCodec(stores["alice"]).ready(tid)] == [b"t=1", b"t=2"]
    for hid, _ in got:
        alice.taken(tid, hid)
    assert GroupCodec(stores["alice"]).ready(tid) == []
    # replays of them are refused now
    assert isinstance(alice.decode(tid, second), Rejected)


def test_a_tampered_reading_kept_for_an_introduction_never_opens(tmp_path):
    # group_rs carries no AEAD tag: only the author's signature proves it,
    # and the key to check it comes with the introduction
    tid, stores = _homes(tmp_path)
    bob = GroupCodec(stores["bob"])
    first, second = bob.encode(tid, b"real-1"), bob.encode(tid, b"real-2")
    forged = bytearray(second)
    forged[-1] ^= 1
    alice = GroupCodec(stores["alice"])
    assert isinstance(alice.decode(tid, bytes(forged)), Held)
    assert alice.decode(tid, first) == b"real-1"
    assert alice.take_introduced() == []               # checked then, and dropped
    assert alice.member(tid).held == []
    assert alice.decode(tid, second) == b"real-2"


def test_readings_kept_for_an_introduction_are_bounded(tmp_path):
    tid, stores = _homes(tmp_path)
    carol = GroupCodec(stores["carol"]).member(tid)
    carol.intro_left = INTRO_WAIT_MAX + 5             # introduced on a link alice never saw
    alice = GroupCodec(stores["alice"])
    for i in range(INTRO_WAIT_MAX + 3):
        r = alice.decode(tid, carol.seal_reading(b"%d" % i, os.urandom(32), 0))
        assert isinstance(r, Held)
    waiting = [h for h in alice.member(tid).held if len(h) > 3]
    assert len(waiting) == INTRO_WAIT_MAX
    assert waiting[0][0] == 3                          # the oldest went first
