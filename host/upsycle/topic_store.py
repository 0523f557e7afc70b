"""The host's local store of topics: admin keys and memberships, one CBOR
file each under ``<home>/topics/``, written atomically (temp file, fsync,
rename) with mode 0600 because they hold secret keys.

Home is ``--home``, else ``$UPSYCLE_HOME``, else ``~/.upsycle``.

Besides the member's own record (shared_protocol.groups), a topic's file
holds what the host keeps for it (upsycle.group_codec): ``held``, messages
waiting for a re-key ([id, message, body once opened]); ``held_next``, the
next id; ``removed_at``, the epoch whose re-key left this member out. They
are saved in the same atomic write as the replay windows they go with.
"""
import os

from shared_protocol.wire import cbor
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.member import Member
from upsycle.errors import TOPIC_STORE, HostError
from upsycle.identity import home as home_dir, make_home, write_private  # noqa: F401 (home_dir: the commands' name)


def _body(v):
    """A held message's opened body: None (not yet), bytes, or a batch's list."""
    if v is None:
        return None
    if isinstance(v, list):
        return [bytes(x) for x in v]
    return bytes(v)


class StoreError(HostError):
    """A topic the user named is missing or ambiguous; the message says what to do."""
    code = TOPIC_STORE


class TopicStore:
    def __init__(self, home):
        self.home = home
        self.dir = os.path.join(home, "topics")

    def _path(self, m):
        return os.path.join(self.dir, "%s-%s.cbor" % (m.topic.hex(), m.identity.public.hex()[:16]))

    def save(self, m):
        make_home(self.home)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        rec = m.to_record()
        rec["role"] = "admin" if isinstance(m, Admin) else "member"
        rec["held"] = getattr(m, "held", [])
        rec["held_next"] = getattr(m, "held_next", 0)
        rec["removed_at"] = getattr(m, "removed_at", None)
        path = self._path(m)
        write_private(path, cbor.encode(rec))
        return path

    def all(self):
        out = []
        if not os.path.isdir(self.dir):
            return out
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".cbor") or name.startswith("."):
                continue
            with open(os.path.join(self.dir, name), "rb") as f:
                rec = cbor.decode(f.read())
            m = Admin.from_record(rec) if rec.get("role") == "admin" else Member.from_record(rec)
            # a fourth field names what a message waits for other than a
            # re-key (group_codec: an author's introduction)
            m.held = [[h[0], bytes(h[1]), _body(h[2])] + list(h[3:4]) for h in rec.get("held", [])]
            m.held_next = rec.get("held_next", 0)
            m.removed_at = rec.get("removed_at")
            out.append(m)
        return out

    def path_of(self, m):
        return self._path(m)

    def find(self, ref, admin_only=False):
        """A topic by name or by a prefix of its hex id."""
        hits = [m for m in self.all()
                if (m.name == ref or m.topic.hex().startswith(ref.lower())) and (not admin_only or isinstance(m, Admin))]
        if not hits:
            raise StoreError("no %stopic %r in %s (see `upsycle topic list`)" % (
                "administered " if admin_only else "", ref, self.dir))
        if len(hits) > 1:
            raise StoreError("%r matches %d topics; give more of the topic id" % (ref, len(hits)))
        return hits[0]
