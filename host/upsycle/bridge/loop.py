"""The MQTT bridge: a member of its topics, subscribed through a proxy.

    deliveries (upsycle.client, opened by upsycle.group_codec)
      -> the topic's DMC replica (a DUPLICATE is published no more)
      -> one retained QoS 1 message per reading, discovery for a new entity
      -> the broker's PUBACKs
      -> replica saved, then the delivery acknowledged to the proxy

So a delivery the bridge has acknowledged is at the broker, and a delivery
it has not is delivered again by the proxy after any restart (the proxy's
cursor, docs/proxy.md "Guarantees"). Acknowledgements are cumulative per
topic, so a delivery is acknowledged only once every earlier one of its
topic is done.

The reverse direction: a message on ``<prefix>/<topic>/set/<name>`` becomes
a write to the topic's ``settings`` map (DMC last-writer-wins map), sealed
and signed with the bridge's member keys by the same codec and published
through the proxy; boards see it through their replica (``on_change``).

Every bad input (a payload that is not JSON, too large, a name too long, a
retained command, no write capability) is refused with one log line
``event=set_refused cause=...`` and changes nothing.
"""
import asyncio
import json
import logging
import os
import shutil
import time

from shared_protocol.dmc import ops as O
from shared_protocol.errors import UpsycleError
from upsycle import crypto_nacl
from upsycle.bridge import discovery as D
from upsycle.bridge import names
from upsycle.bridge.broker import Broker
from upsycle.bridge.state import OUTBOX_MAX, TopicState, known_topics
from upsycle.client import Client
from upsycle.identity import node_key
from upsycle.bridge.codec import BridgeCodec, SaveAtFlush
from upsycle.group_codec import EpochChanged, Held, Rejected

log = logging.getLogger("upsycle.bridge")

# The DMC map that set commands write to, and that boards read settings from.
SETTINGS_MAP = "settings"
# Largest set payload taken from MQTT: a setting is a number, a word or a
# small JSON object; the op that carries it must fit dmc.ops.OP_MAX (1024)
# with its header and the bridge's causal dependencies (up to 32 authors).
SET_PAYLOAD_MAX = 256
# Acknowledgements to the proxy (and the replica save before them) happen at
# most this often: one save covers every reading acknowledged meanwhile.
# Readings reach the broker before it; only the proxy's cursor waits, and
# the session window (128) is far more than 100 ms of a site's readings.
FLUSH_INTERVAL_S = 0.1
# How often availability is looked at; a node goes offline within this
# much after its stale_after.
AVAIL_TICK_S = 5.0
# A reading time before this (2020-09-13) is a board without a clock; the
# bridge then counts the time it heard the reading.
PLAUSIBLE_TIME = 1600000000
# Set commands refused, logged in full; past this, one line per hundred.
REFUSED_LOGGED_MAX = 100


class BridgeError(Exception):
    code = "bridge"


class _Topic:
    def __init__(self, member, level, prefix, root, author):
        self.id = member.topic
        self.member_name = member.name or member.topic.hex()
        self.level = level
        self.mqtt = D.Topics(prefix, level)
        self.st = TopicState(root, member.topic, author)
        self.st.name = self.member_name
        self.pending = {}        # delivery seq -> publishes not yet acknowledged by the broker
        self.order = []          # those seqs, ascending
        self.done_upto = 0       # every delivery up to here is at the broker
        self.acked_upto = 0      # ... and acknowledged to the proxy
        self.online = {}         # node -> bool as last published


class Bridge:
    def __init__(self, cfg):
        self.cfg = cfg
        crypto_nacl.install()
        self.store = SaveAtFlush(cfg.home)
        self.codec = BridgeCodec(self.store)
        self.root = os.path.join(cfg.home, "bridge")
        members = [m for m in self.store.all()]
        if cfg.topics:
            chosen = []
            for ref in cfg.topics:
                chosen.append(self.store.find(ref))
            members = chosen
        if not members:
            raise BridgeError("no topic to bridge in %s: join one with `upsycle topic join URL --home %s`"
                              % (self.store.dir, cfg.home))
        key = node_key(cfg.home)
        self.client = Client(cfg.proxy_host, cfg.proxy_port, codec=self.codec, home=cfg.home,
                             transport=cfg.transport, secure=cfg.secure, proxy_key=cfg.proxy_key,
                             identity=key if cfg.secure else None)
        author = self.client.node_id[:4] + os.urandom(4)
        self.topics = {}
        levels = {}
        for m in members:
            if m.topic in self.topics:
                continue
            level = cfg.levels.get(m.name) or names.mqtt_level(m.name or m.topic.hex())
            if level in levels:
                raise BridgeError("topics %r and %r both map to the MQTT level %r: give one another name "
                                  "with --as NAME=LEVEL" % (levels[level], m.name, level))
            levels[level] = m.name
            self.topics[m.topic] = _Topic(m, level, cfg.prefix, self.root, author)
        self.broker = Broker(cfg.broker_host, cfg.broker_port, cfg.client_id or "upsycle-bridge-" +
                             self.client.node_id[:6].hex(), D.status_topic(cfg.prefix),
                             cfg.username, cfg.password, on_connected=self._broker_up,
                             on_message=self._mqtt_message)
        self._flush_handle = None
        self._refused = 0
        self.published = 0
        self.stop = None

    # -- life cycle ---------------------------------------------------------

    async def run(self, stop=None):
        self.stop = stop or asyncio.Event()
        for t in self.topics.values():
            self.broker.subscribe(t.mqtt.set_filter())
        self.broker.subscribe("%s/status" % self.cfg.discovery_prefix)
        log.info("event=bridge_start topics=%s broker=%s:%d proxy=%s:%d", ",".join(
            t.level for t in self.topics.values()), self.cfg.broker_host, self.cfg.broker_port,
            self.cfg.proxy_host, self.cfg.proxy_port)
        try:
            # Neither an unreachable broker nor proxy (both retried) may keep
            # a stop request waiting.
            if not await self._until_stopped(self.broker.start()):
                return 0
            await self._leave_old_topics()
            if not await self._until_stopped(self._connect_proxy()):
                return 0
            tasks = [asyncio.ensure_future(self._deliveries()), asyncio.ensure_future(self._availability())]
            for t in self.topics.values():
                for op in list(t.st.outbox):
                    tasks.append(asyncio.ensure_future(self._send_setting(t, op)))
            stop_wait = asyncio.ensure_future(self.stop.wait())
            fatal = asyncio.ensure_future(self.client._fatal.wait())
            done, _ = await asyncio.wait([stop_wait, fatal, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
            for x in tasks + [stop_wait, fatal]:
                x.cancel()
            if tasks[0] in done and tasks[0].exception() is not None:
                raise tasks[0].exception()
            if self.client.fatal is not None:
                raise self.client.fatal
        finally:
            self._flush()
            await self.client.close()
            self.broker.close()
        return 0

    async def _until_stopped(self, coro):
        """Run coro unless a stop comes first: True if it finished."""
        task = asyncio.ensure_future(coro)
        stop_wait = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not task.done():
            task.cancel()
            return False
        task.result()    # raises what it raised (BrokerRefused...)
        return True

    async def _connect_proxy(self):
        while True:
            try:
                await self.client.connect(timeout=10)
                break
            except ConnectionError as e:
                log.warning("event=proxy_unreachable detail=%r (retrying)", str(e))
        for t in self.topics.values():
            await self.client.subscribe(t.id, timeout=None)

    async def _leave_old_topics(self):
        """Topics bridged before and not now: remove their entities."""
        for hexid in known_topics(self.root):
            if bytes.fromhex(hexid) in self.topics:
                continue
            st = TopicState(self.root, bytes.fromhex(hexid), b"\0")
            level = names.mqtt_level(st.name or hexid)
            await self._remove_entities(st, D.Topics(self.cfg.prefix, level), bytes.fromhex(hexid))
            shutil.rmtree(st.dir, ignore_errors=True)
            log.info("event=topic_left topic=%s devices_removed=%d", level, len(st.devices))

    async def _remove_entities(self, st, topics, topic_id):
        futs = []
        for node, comps in sorted(st.devices.items()):
            dev = D.device_id(topic_id, node)
            futs.append(self.broker.publish(D.config_topic(self.cfg.discovery_prefix, dev), b""))
            for c in comps.values():
                futs.append(self.broker.publish(c["state_topic"], b""))
            futs.append(self.broker.publish(topics.availability(node), b""))
        if futs:
            await asyncio.gather(*futs)
        st.devices = {}

    # -- proxy -> broker ------------------------------------------------------

    async def _deliveries(self):
        while True:
            d = await self.client.next_delivery(consume=False)
            self._delivery(d)

    def _delivery(self, d):
        t = self.topics.get(bytes(d.topic))
        if t is None:
            self.client.consumed(d.topic, d.seq)
            return
        if d.held is not None:
            # A publication the codec kept until its re-key came, handed out
            # now (upsycle.group_codec Held): not a proxy delivery of its own.
            # The codec forgets it only once the broker has acknowledged
            # every reading in it; a crash before that hands it out again.
            futs = []
            for body in (d.payload if isinstance(d.payload, list) else [d.payload]):
                futs.extend(self._apply(t, d.seq, body))
            self._take_when_published(d, futs)
            return
        if d.seq <= t.done_upto or d.seq in t.pending:
            return   # under way already
        futs = []
        if d.missed:
            log.warning("event=missed topic=%s count=%d cause=%s", t.level, d.missed, d.cause)
        elif isinstance(d.payload, Rejected):
            log.warning("event=delivery_rejected topic=%s seq=%d code=%s", t.level, d.seq, d.payload.code)
            if d.payload.code == "group_removed":
                log.error("event=removed_from_topic topic=%s: this bridge was removed; its entities go",
                          t.level)
                futs.append(asyncio.ensure_future(self._remove_entities(t.st, t.mqtt, t.id)))
        elif isinstance(d.payload, Held):
            log.info("event=delivery_held topic=%s seq=%d code=%s (opened when its re-key comes)",
                     t.level, d.seq, d.payload.code)
        elif isinstance(d.payload, EpochChanged):
            log.info("event=rekeyed topic=%s epoch=%d", t.level, d.payload.epoch)
            futs = self._remove_nodes(t, set(bytes(k).hex() for k in d.payload.removed))
        elif isinstance(d.payload, list):     # a batch of readings (docs/private-groups.md)
            for body in d.payload:
                futs.extend(self._apply(t, d.seq, body))
        else:
            futs = self._apply(t, d.seq, d.payload)
        t.pending[d.seq] = len(futs)
        t.order.append(d.seq)
        for f in futs:
            f.add_done_callback(lambda f, t=t, seq=d.seq: self._published(t, seq, f))
        self._advance(t)

    def _apply(self, t, seq, body):
        r = t.st.replica
        before = r.applied
        try:
            r.receive(body)
        except UpsycleError as e:
            log.warning("event=op_refused topic=%s seq=%d code=%s detail=%r", t.level, seq, e.code, e.message)
            return []
        signer = getattr(body, "signer", None)
        if signer is not None:
            t.st.signers[O.author_seq(body)[0].hex()] = signer.hex()
            t.st.dirty = True
        n = r.applied - before
        if n == 0:
            return []     # a duplicate, or buffered until its dependencies come
        t.st.dirty = True
        if n > len(r.tail):
            log.error("event=ops_unpublished topic=%s count=%d (over the replica tail)", t.level, n - len(r.tail))
        futs = []
        for data in r.tail[-n:]:
            op = O.decode(data)
            if op[4] == O.K_APPEND:
                futs.extend(self._reading(t, op))
        return futs

    def _reading(self, t, op):
        author, seq, name, when, value = op[0], op[1], op[5], op[6], op[7]
        node = author.hex()
        futs = []
        comps = t.st.devices.setdefault(node, {})
        cid = names.ha_id(name)
        if cid not in comps:
            comps[cid] = D.component(t.mqtt, D.device_id(t.id, node), node, name, value)
            t.st.save_meta()
            futs.append(self._announce(t, node))
        payload = D.reading_payload(value, D.unit_of(name, value), when, author, seq)
        futs.append(self.broker.publish(t.mqtt.reading(node, name), payload))
        self.published += 1
        now = time.time()
        heard = min(now, when) if when >= PLAUSIBLE_TIME else now
        if heard > t.st.heard.get(node, 0):
            t.st.heard[node] = heard
        if not t.online.get(node) and now - t.st.heard[node] <= self.cfg.stale_after:
            t.online[node] = True
            futs.append(self.broker.publish(t.mqtt.availability(node), D.ONLINE))
        return futs

    def _remove_nodes(self, t, keys):
        """Members removed by a re-key: their nodes' devices go (an empty
        retained config), with their retained readings and availability."""
        futs = []
        for node in sorted(t.st.devices):
            if t.st.signers.get(node) not in keys:
                continue
            dev = D.device_id(t.id, node)
            futs.append(self.broker.publish(D.config_topic(self.cfg.discovery_prefix, dev), b""))
            for c in t.st.devices[node].values():
                futs.append(self.broker.publish(c["state_topic"], b""))
            futs.append(self.broker.publish(t.mqtt.availability(node), b""))
            del t.st.devices[node]
            t.st.heard.pop(node, None)
            t.online.pop(node, None)
            t.st.dirty = True
            log.info("event=node_removed topic=%s node=%s: its entities are removed", t.level, node)
        if futs:
            t.st.save_meta()
        return futs

    def _announce(self, t, node):
        dev = D.device_id(t.id, node)
        return self.broker.publish(D.config_topic(self.cfg.discovery_prefix, dev), D.device_config(
            self.cfg.prefix, t.mqtt, t.member_name, dev, node, t.st.devices[node]))

    def _take_when_published(self, d, futs):
        if not futs:
            self.client.taken(d)
            return
        fut = asyncio.ensure_future(asyncio.gather(*futs))

        def done(f):
            if not f.cancelled() and f.exception() is None:
                self.client.taken(d)
        fut.add_done_callback(done)

    def _published(self, t, seq, fut):
        if fut.cancelled():
            return
        if fut.exception() is not None:
            # paho refused to queue it (never seen in practice): the delivery
            # stays unacknowledged and the proxy delivers it again next link.
            log.error("event=publish_failed topic=%s seq=%d detail=%r", t.level, seq, str(fut.exception()))
            return
        if seq in t.pending:
            t.pending[seq] -= 1
            self._advance(t)

    def _advance(self, t):
        moved = False
        while t.order and t.pending[t.order[0]] <= 0:
            seq = t.order.pop(0)
            del t.pending[seq]
            t.done_upto = seq
            moved = True
        if moved and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._flush)

    def _flush(self):
        """Save each changed replica, then acknowledge to the proxy.

        Only a topic with no delivery under way: the replica then holds
        exactly what is at the broker. Saved with a reading the broker has
        not acknowledged, a crash would make the proxy's copy of it a
        duplicate for ever after. This cannot wait for ever: past the
        session window the proxy sends nothing more until acknowledged, and
        what is under way completes."""
        self._flush_handle = None
        self.store.flush()
        for t in self.topics.values():
            if t.pending or not (t.done_upto > t.acked_upto or t.st.acked):
                continue
            if t.st.dirty:
                t.st.save()
            if t.done_upto > t.acked_upto:
                self.client.consumed(t.id, t.done_upto)
                t.acked_upto = t.done_upto

    # -- availability and republishing ---------------------------------------

    async def _availability(self):
        while True:
            await asyncio.sleep(AVAIL_TICK_S)
            self._check_stale()

    def _check_stale(self):
        now = time.time()
        for t in self.topics.values():
            for node, heard in t.st.heard.items():
                on = now - heard <= self.cfg.stale_after
                if t.online.get(node) != on:
                    t.online[node] = on
                    self.broker.publish(t.mqtt.availability(node), D.ONLINE if on else D.OFFLINE)
                    log.info("event=node_%s topic=%s node=%s", "online" if on else "stale", t.level, node)

    def _broker_up(self):
        """Every CONNACK (and Home Assistant's birth message): discovery and
        availability again. Readings are retained at the broker already;
        those still unacknowledged paho sends again by itself."""
        for t in self.topics.values():
            for node in sorted(t.st.devices):
                self._announce(t, node)
            t.online = {}
        self._check_stale()

    # -- broker -> proxy (set commands) ---------------------------------------

    def _mqtt_message(self, topic, payload, retained):
        if topic == "%s/status" % self.cfg.discovery_prefix:
            if payload == b"online":
                log.info("event=ha_online: discovery published again")
                self._broker_up()
            return
        for t in self.topics.values():
            pre = t.mqtt.set_prefix()
            if topic.startswith(pre):
                self._set_command(t, topic[len(pre):], payload, retained)
                return

    def _refuse(self, t, name, cause, detail):
        self._refused += 1
        if self._refused <= REFUSED_LOGGED_MAX or self._refused % 100 == 0:
            log.warning("event=set_refused topic=%s name=%r cause=%s detail=%r (refused so far: %d)",
                        t.level, name[:80], cause, detail, self._refused)

    def _set_command(self, t, name, payload, retained):
        member = self.codec.member(t.id)
        if retained:
            return self._refuse(t, name, "retained", "a retained message is a stored one, not a new command; "
                                                     "publish set commands without the retain flag")
        if not member.can_write:
            return self._refuse(t, name, "no_write_capability",
                                "the bridge joined %s with a read-only invite; invite it with --write to "
                                "let MQTT write to the topic" % t.level)
        cap = member.capability
        if cap is not None and cap[3] and time.time() >= cap[3]:
            return self._refuse(t, name, "capability_expired", "the bridge's write capability has expired")
        if len(payload) > SET_PAYLOAD_MAX:
            return self._refuse(t, name, "oversize", "%d bytes, over %d" % (len(payload), SET_PAYLOAD_MAX))
        if not name or len(name) > O.KEY_MAX:
            return self._refuse(t, name, "bad_name", "a setting name is 1..%d characters" % O.KEY_MAX)
        try:
            value = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return self._refuse(t, name, "not_json", "the payload must be a JSON value (%s)" % e)
        if len(t.st.outbox) >= OUTBOX_MAX:
            return self._refuse(t, name, "outbox_full", "%d settings wait for the proxy already" % OUTBOX_MAX)
        try:
            op = t.st.replica.put(SETTINGS_MAP, name, value)
        except UpsycleError as e:
            return self._refuse(t, name, e.code, e.message)
        t.st.outbox.append(op)
        t.st.save_meta()      # the outbox on disk before the op leaves; the replica at the next flush
        log.info("event=set_written topic=%s name=%r", t.level, name)
        asyncio.ensure_future(self._send_setting(t, op))

    async def _send_setting(self, t, op):
        try:
            await self.client.publish(t.id, op)
        except (UpsycleError, ConnectionError) as e:
            log.error("event=set_not_sent topic=%s code=%s detail=%r", t.level, getattr(e, "code", "-"), str(e))
            return
        t.st.acked.add(op)    # leaves the outbox once a replica holding it is saved
        t.st.dirty = True
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._flush)
