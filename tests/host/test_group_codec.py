"""The host's payload codec speaks signed readings (group_rs; it opens the earlier group_rd too): what
`upsycle pub`/`sub` and the async client send and take."""
import os

from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url, member_from_url
from shared_protocol.wire import envelope as E
from upsycle.group_codec import GroupCodec, Rejected
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
    assert isinstance(r, Rejected) and r.code == "group_author_unknown"
