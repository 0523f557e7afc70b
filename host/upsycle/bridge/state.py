"""What the bridge keeps on disk per bridged topic, under
``<home>/bridge/<topic id>/``:

- ``replica.dmc``: its DMC replica (shared_protocol.dmc.store: checksummed,
  written to a temp file and renamed). The replica is what makes a reading
  delivered twice (a retransmission, a proxy restarted before our
  acknowledgement reached it, two proxies) publish once: the second copy is
  a DUPLICATE for it. It is saved only after the broker acknowledged every
  reading it holds and before the proxy is told, so a crash in between
  makes the proxy deliver again and the bridge publish again (at least
  once), never the other way round (lost).
- ``state.json``: the devices and entities announced to Home Assistant (so
  they can be removed when the topic is left), when each node was last
  heard, and the settings writes the proxy has not acknowledged yet
  (outbox, sent again at start).
"""
import json
import os

from shared_protocol.dmc import store as dstore
from shared_protocol.dmc.errors import MISSING, StoreError
from shared_protocol.dmc.replica import Replica

# Readings per log, a host's retention (a board keeps fewer, the newest:
# firmware/topic.py LOG_KEEP; sync does not depend on it).
LOG_KEEP = 200
# Applied operations kept to serve peers: the bridge serves none (it syncs
# through the proxy only), so it keeps what a board keeps; this bounds the
# replica file (dmc.store STORE_MAX); 128 holds one op and the 64 an op
# may release from the pending buffer (replica.PENDING_MAX).
TAIL_KEEP = 128
# Settings writes waiting for the proxy's acknowledgement (each ~60 bytes):
# past this a set command is refused rather than forgotten later.
OUTBOX_MAX = 256
STATE_VERSION = 1


class TopicState:
    def __init__(self, root, topic_id, author):
        self.dir = os.path.join(root, topic_id.hex())
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.store = dstore.Store(os.path.join(self.dir, "replica.dmc"))
        self.path = os.path.join(self.dir, "state.json")
        try:
            self.replica = self.store.load()
        except StoreError as e:
            if e.code != MISSING:
                os.replace(self.store.path, self.store.path + ".bad")
            self.replica = Replica(author, LOG_KEEP, 0, TAIL_KEEP)
        self.devices = {}      # node hex -> {component id: component}
        self.heard = {}        # node hex -> Unix seconds last heard
        self.outbox = []       # op bytes not yet acknowledged by the proxy
        self.signers = {}      # node hex -> member key (hex) that signed its readings
        self.name = None       # the topic's name when it was last bridged
        try:
            with open(self.path) as f:
                v = json.load(f)
            if v.get("version") == STATE_VERSION:
                self.devices = v["devices"]
                self.heard = v["heard"]
                self.outbox = [bytes.fromhex(x) for x in v["outbox"]][-OUTBOX_MAX:]
                self.name = v.get("name")
                self.signers = v.get("signers", {})
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # Our own writes waiting in the outbox are in the replica too (a
        # crash may have come before the replica holding them was saved):
        # applied again, so our next write never reuses their sequence.
        for op in self.outbox:
            try:
                self.replica.receive(op)
            except Exception:
                pass
        self.acked = set()     # outbox ops the proxy holds: dropped at the next replica save
        self.dirty = False

    def save(self):
        """Replica first, then the JSON state, each replaced atomically.
        The replica is saved only when every delivery it holds is at the
        broker (the bridge's flush): saved earlier, a crash would leave a
        reading in it that the broker never got, and the proxy's copy of it
        would be a duplicate for ever after."""
        self.replica.compact(self.replica.vv)   # the bridge serves no peer: fold everything
        self.store.save(self.replica)
        if self.acked:
            self.outbox = [x for x in self.outbox if x not in self.acked]
            self.acked = set()
        self.save_meta()
        self.dirty = False

    def save_meta(self):
        """The JSON state alone: at once when an entity is announced or
        removed (so a later removal knows it), while the replica waits for
        the broker's acknowledgements."""
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"version": STATE_VERSION, "name": self.name, "devices": self.devices,
                       "heard": self.heard, "signers": self.signers, "outbox": [x.hex() for x in self.outbox]}, f, sort_keys=True)
        os.replace(tmp, self.path)


def known_topics(root):
    """Topic ids (hex) the bridge has state for."""
    try:
        return sorted(d for d in os.listdir(root) if len(d) == 32 and os.path.isdir(os.path.join(root, d)))
    except OSError:
        return []
