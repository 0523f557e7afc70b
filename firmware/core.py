"""The node: its topics, the app API and its status.

    Node(cfg) -> topics (firmware/topic.py: membership, replica, outbox)
              -> proxy: firmware/proxy_link.py (session window, acks, refill),
                        imported once the topics are loaded
              -> lan:   firmware/lan_link.py, imported only when the config
                        has a ``lan`` section (open_lan)
              -> ble:   firmware/ble_link.py, imported only when the config's
                        transport has BLE (open_ble)

firmware/runtime.py's main loop calls ``turn`` once per loop turn and moves
the datagrams. Durability: a reading is acknowledged to the app (publish
returns) only after it is in the outbox file on flash; a delivery is
acknowledged to the proxy only after the op it carried is in the replica
file (``turn``: save, then ``ProxyLink.ack_consumed``).
"""
from shared_protocol.crypto import api as crypto
from shared_protocol.dmc import ops as O
from shared_protocol.errors import UpsycleError
from shared_protocol.groups.member import EpochChanged
from shared_protocol.groups.wire import BATCH_MAX

from firmware import platform
from firmware.topic import AUTHOR_GEN_BYTES, AUTHOR_NODE_BYTES, DATA_DIR, LOG_KEEP, Topic

# Bytes of a DMC author id: the node id's first AUTHOR_NODE_BYTES and a
# random generation per replica (topic.py, "Authors"). Every op carries its
# author, and its causal dependencies name other authors, so the id is on
# the air several times per reading: 8 bytes instead of a whole 32-byte key
# save about 24 bytes per mention. Authors are not secrets or proofs (a
# member's publication is proven by its group signature, groups/member.py);
# they only have to differ between the replicas of one topic, and two
# random 8-byte ids clash with probability 2**-64 per pair.
AUTHOR_BYTES = AUTHOR_NODE_BYTES + AUTHOR_GEN_BYTES

# Errors from a misbehaving proxy or peer logged before going quiet (it may
# send garbage at line rate; the REPL must stay readable).
ERRORS_LOGGED_MAX = 20


# Group rejections that are expected copies, not faults: a re-key part
# already applied (the admin sends its re-keys again for members that missed
# them), a part holding other members' entries (shared_protocol/groups).
_QUIET_CODES = ("group_stale_epoch", "group_rekey_other_part")
# Readings kept in RAM because their author's introduction had not come yet
# (groups/readings.py): a reading can overtake the one carrying it when its
# author publishes through two proxies (`--proxy-mode all`: one copy by the
# mirror, one by federation). Dropped for good, it would leave a gap in that
# author's log that the replica waits on. At most INTRO_WAIT_MAX readings
# and INTRO_WAIT_BYTES_MAX bytes per topic (the oldest goes first): a board
# has no room for more, and an introduction comes at least every
# readings.INTRO_EVERY messages of its author.
INTRO_WAIT_MAX = 4
INTRO_WAIT_BYTES_MAX = 1200


def _log(msg):
    print(msg)


def batch_size(cfg, log=_log):
    """Readings per signed message (config "batch": {"readings": N}), 1 if unset."""
    bc = cfg.get("batch")
    if bc is None:
        return 1
    n = bc.get("readings") if isinstance(bc, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= BATCH_MAX:
        log("upsycle: config 'batch' must be {\"readings\": 1..%d}: signing every reading" % BATCH_MAX)
        return 1
    return n


class Node:
    def __init__(self, cfg, data_dir=DATA_DIR, log=_log, files=None, topics_loaded=None):
        """Load the topics (their stored replicas and members), then make
        the proxy link. ``topics_loaded()``, if given, runs in between:
        firmware/runtime.py drops the boot-only modules there and imports
        the link's, so a board never holds both with a stored replica's
        temporaries (docs/node.md, "Code a node never runs, and the links'
        modules after the topics")."""
        self.cfg = cfg
        self.log = log
        self.node_id = bytes.fromhex(cfg["node_id"])
        # Each topic's DMC author: this prefix + a generation per replica (topic.py).
        self.node_author = self.node_id[:AUTHOR_NODE_BYTES]
        crypto.set_random_source(platform.random_bytes)
        platform.makedirs(data_dir)
        batch = batch_size(cfg, log)
        keep = cfg.get("replica", {}).get("log_keep", LOG_KEEP)   # checked by firmware/config.py
        self.topics = []
        for inv in cfg.get("topics", []):
            try:
                self.topics.append(Topic(inv, self.node_author, data_dir, files, log, None, batch, keep))
            except UpsycleError as e:
                # (str(e): the code, and the text where the build kept it)
                log("upsycle: a topic invite is unusable (%s): skipped; re-flash with a fresh invite" % e)
        self.by_id = {}
        for t in self.topics:
            self.by_id[t.topic] = t
        self.counts = {"acked": 0, "delivered": 0, "duplicates": 0, "rejected": 0, "errors": 0}
        if topics_loaded is not None:
            topics_loaded()
        from firmware.proxy_link import ProxyLink
        self.proxy = ProxyLink(self, cfg)
        if not self.proxy.proxies:
            for t in self.topics:
                if t.refilling:
                    log("upsycle: topic %s: no proxy in the config to refill the replica from: "
                        "LAN peers only" % t.name)
                    t.end_refill()
        self.lan = None
        self.ble = None

    def open_ble(self):
        """Start the BLE radio if the config's transport has it
        (firmware/config.py checked it); False when not or it fails."""
        if "ble" not in self.cfg.get("transport", "wifi"):
            return False
        from firmware.ble_link import BleRadio
        try:
            self.ble = BleRadio(self)
        except (OSError, ValueError) as e:
            self.log("upsycle: BLE radio failed (%s): BLE off" % (e,))
            return False
        self.log("upsycle: BLE on, address %s" % self.ble.mac.hex())
        return True

    def open_lan(self, my_ip):
        """Start the LAN link if the config has one (firmware/config.py
        checked it); False when there is none or its socket fails."""
        lc = self.cfg.get("lan")
        if lc is None:
            return False
        from firmware.lan_link import LanLink
        port = lc["port"]
        peers = lc.get("peers", [])
        try:
            self.lan = LanLink(self, my_ip, port, peers)
        except (OSError, ValueError) as e:
            self.log("upsycle: LAN socket on port %d failed (%s): LAN off" % (port, e))
            return False
        self.log("upsycle: LAN on port %d, %d peer address(es)%s" % (
            port, len(peers), "" if peers or platform.IS_VIRTUAL else " + broadcast"))
        return True

    # -- the app API --

    def topic(self, name):
        for t in self.topics:
            # a name (str) or an id (bytes); str == bytes warns on MicroPython
            if (t.name if isinstance(name, str) else t.topic) == name:
                return t
        raise KeyError("no topic %r in this node's config" % (name,))

    def publish(self, topic, key, value, t=None):
        """Append a reading to ``key`` in the topic's replica and queue it for
        the proxy; durable on flash when this returns."""
        tp = self.topic(topic)
        tp.append(key, platform.unix_time() if t is None else t, value)
        tp.save()

    def on_change(self, topic, callback):
        """callback(key, value, author) for every op applied, local or remote."""
        self.topic(topic).callbacks.append(callback)

    # -- one turn of the loop (no I/O wait inside) --

    def turn(self, now):
        self.proxy.turn(now)
        saved = 0
        for t in self.topics:
            saved += t.save()
        self.proxy.ack_consumed()   # only now that their ops are on flash
        return saved

    def deliver(self, topic, seq, payload):
        """A delivery from the proxy: opened (AEAD, signature, capability,
        replay window) and applied to the topic's replica."""
        tp = self.by_id.get(topic)
        if tp is None:
            return
        got = self._open(tp, seq, payload)
        if got is None:
            return
        self._apply(tp, got)
        if tp.intro_wait:
            # the introduction may have come with this one: what waited for it, in order
            waiting, tp.intro_wait = tp.intro_wait, None
            for p in waiting:
                got = self._open(tp, seq, p)
                if got is not None:
                    self._apply(tp, got)

    def _open(self, tp, seq, payload):
        """The op bodies a delivery proves (or an EpochChanged); None when
        it is refused (counted, logged) or kept for its author's
        introduction."""
        try:
            return tp.open(payload, platform.unix_time())
        except (UpsycleError, ValueError, TypeError) as e:
            code = getattr(e, "code", e)
            if code in _QUIET_CODES:
                return   # a copy of a re-key we applied, or a part for other members
            if code == "group_author_unknown":
                w = tp.intro_wait or []
                w.append(bytes(payload))
                while len(w) > INTRO_WAIT_MAX or sum(len(x) for x in w) > INTRO_WAIT_BYTES_MAX:
                    w.pop(0)
                    self.counts["rejected"] += 1
                tp.intro_wait = w or None
                return
            if code == "group_replay":
                # A reading the replica already holds, by its (author, seq),
                # the node's message-id dedup: the backlog of a proxy taken
                # over after a failover, or a copy that came by two proxies.
                # Found before any signature check; counted, not logged.
                self.counts["duplicates"] += 1
                return
            self.counts["rejected"] += 1
            self.log("upsycle: topic %s: delivery %d rejected (%s)" % (tp.name, seq, code))
            return

    def _apply(self, tp, got):
        if isinstance(got, EpochChanged):
            self.log("upsycle: topic %s: re-keyed to epoch %d" % (tp.name, got.epoch))
            return
        platform.compact()   # the check's garbage out of the way of the replica's new entries
        for body in got:
            try:
                tp.apply(body)
                self.counts["delivered"] += 1
            except UpsycleError as e:
                self.log("upsycle: topic %s: op not applied (%s)" % (tp.name, e))

    def count_error(self):
        """Count a bad datagram or message; True while it should be logged."""
        self.counts["errors"] += 1
        return self.counts["errors"] <= ERRORS_LOGGED_MAX

    def readings_held(self, tp):
        n = 0
        objects = tp.replica.objects
        for key in objects:
            if key[0] == O.T_LOG:
                n += len(objects[key])
        return n

    def status(self):
        out = held = 0
        for t in self.topics:
            out += len(t.outbox)
            held += self.readings_held(t)
        s = "published %d acked %d delivered %d outbox %d readings %d" % (
            sum(t.published for t in self.topics), self.counts["acked"], self.counts["delivered"], out, held)
        if self.lan is not None:
            s += self.lan.status()
        if self.ble is not None:
            s += self.ble.status()
        return s
