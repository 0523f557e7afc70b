"""The MQTT side of the bridge: paho-mqtt 2.x (CallbackAPIVersion.VERSION2)
driven from asyncio.

paho runs its network loop in its own thread (``loop_start``); every
callback hands its event to the asyncio loop with ``call_soon_threadsafe``
and touches nothing else, so no lock is shared between the two threads.

- ``publish`` returns a future that completes on the broker's PUBACK (QoS 1).
  paho keeps an unacknowledged QoS 1 message across a lost connection and
  sends it again (DUP set) once it has reconnected, so a future survives
  broker restarts; the bridge acknowledges to its proxy only after it.
- Order across a lost connection: from the moment the loss is known until
  paho's messages from before it are acknowledged again, new publishes wait
  in the bridge (``_held``), in order. paho sends a publish made while it
  reconnects (its socket open, the CONNACK not yet read) at once and its
  older ones only after the CONNACK, so a reading could overtake those
  before it and a retained state go back in time.
- Reconnects: paho's own backoff (``reconnect_delay_set``: 1 s doubling to
  ``RECONNECT_MAX_S``); on every CONNACK the bridge subscribes again and
  republishes its status and discovery (``on_connected``).
- The last will is ``<prefix>/bridge/status`` = ``offline`` (retained), so
  Home Assistant marks every entity unavailable when the bridge is gone.
- A broker that refuses the credentials (MQTT 3.1.1 CONNACK 4/5, MQTT 5
  reason 0x86/0x87) is fatal: retrying the same credentials cannot help.
"""
import asyncio
import collections
import logging

import paho.mqtt.client as mqtt

from upsycle.bridge.discovery import OFFLINE, ONLINE

log = logging.getLogger("upsycle.bridge")

# Longest wait between two connection attempts (HA's own MQTT client and
# most devices retry within a minute; a Pi rebooting takes about that).
RECONNECT_MAX_S = 30
# QoS 1 messages paho keeps on the wire unacknowledged. A loopback broker
# answers within a millisecond; 64 keeps a LAN one busy too.
INFLIGHT_MAX = 64
# Messages paho holds in all (in flight, or waiting while the broker is
# away), and likewise the bridge's own (``_held``). The proxy session's
# delivery window bounds what the bridge takes before it acknowledges; this
# bound is far above it and only catches a bug.
QUEUED_MAX = 65536
# CONNACK reasons that mean "these credentials will never do".
AUTH_REFUSED = (0x86, 0x87)   # Bad user name or password, Not authorized
KEEPALIVE_S = 30


class BrokerRefused(Exception):
    code = "broker_refused"


class Broker:
    def __init__(self, host, port, client_id, status_topic, username=None, password=None,
                 on_connected=None, on_message=None):
        self.host = host
        self.port = port
        self.status_topic = status_topic
        self.on_connected = on_connected     # called in the asyncio loop after each CONNACK
        self.on_message_cb = on_message      # (topic, payload bytes, retained)
        self.loop = None
        self.connected = False
        self.connects = 0
        self.refused = None
        self._ready = None
        self._acks = {}
        self._before = set()   # mids paho held when the connection was lost (it sends them again)
        self._held = collections.deque()   # (topic, payload, retain, future) waiting for those
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if username is not None:
            c.username_pw_set(username, password)
        c.will_set(status_topic, OFFLINE, qos=1, retain=True)
        c.reconnect_delay_set(1, RECONNECT_MAX_S)
        c.max_inflight_messages_set(INFLIGHT_MAX)
        c.max_queued_messages_set(QUEUED_MAX)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c
        self.subscriptions = []

    # -- asyncio side ------------------------------------------------------

    async def start(self, timeout=None):
        """Connect (paho retries in the background) and wait for the first
        CONNACK; BrokerRefused if the broker refuses our credentials."""
        self.loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()
        await asyncio.wait_for(self._ready.wait(), timeout)
        if self.refused is not None:
            raise self.refused

    def publish(self, topic, payload, retain=True):
        """Queue a QoS 1 publish; the future completes on its PUBACK."""
        fut = self.loop.create_future()
        if self._held or self._before or not self.connected:
            if len(self._held) >= QUEUED_MAX:
                fut.set_exception(ConnectionError("the broker is away and %d publishes wait" % QUEUED_MAX))
            else:
                self._held.append((topic, payload, retain, fut))
            return fut
        self._hand(topic, payload, retain, fut)
        return fut

    def _hand(self, topic, payload, retain, fut):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            fut.set_exception(ConnectionError("paho refused the publish: %s" % mqtt.error_string(info.rc)))
            return
        self._acks[info.mid] = fut

    def _release(self):
        """Hand the held publishes to paho, in order, once it is connected
        and holds nothing from before the last loss."""
        while self._held and self.connected and not self._before:
            topic, payload, retain, fut = self._held.popleft()
            if not fut.done():
                self._hand(topic, payload, retain, fut)

    def subscribe(self, topic_filter):
        """Subscribe now (if connected) and again after every reconnect."""
        if topic_filter not in self.subscriptions:
            self.subscriptions.append(topic_filter)
        if self.connected:
            self.client.subscribe(topic_filter, qos=1)

    def close(self):
        if self.connected:
            # A clean stop: say offline ourselves (the will is only sent on
            # an unclean disconnect).
            info = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def _acked(self, mid):
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(mid)
        if mid in self._before:
            self._before.discard(mid)
            self._release()

    def _connected(self, reason, value):
        if value in AUTH_REFUSED:
            self.refused = BrokerRefused("the broker at %s:%d refused the connection: %s (check --mqtt-user and "
                                         "the password)" % (self.host, self.port, reason))
            log.error("event=broker_refused reason=%r", str(reason))
            self._ready.set()
            return
        if value >= 0x80:
            log.warning("event=broker_refused reason=%r (retrying)", str(reason))
            return
        self.connected = True
        self.connects += 1
        log.info("event=broker_connected host=%s port=%d connects=%d", self.host, self.port, self.connects)
        for f in self.subscriptions:
            self.client.subscribe(f, qos=1)
        self.client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        if self.on_connected is not None:
            self.on_connected()
        self._release()
        self._ready.set()

    def _disconnected(self, reason):
        if self.connected:
            log.warning("event=broker_lost reason=%r (reconnecting with backoff)", str(reason))
        self.connected = False
        self._before.update(self._acks)

    # -- paho's thread: hand over and return -------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.loop.call_soon_threadsafe(self._connected, reason_code, reason_code.value)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.loop.call_soon_threadsafe(self._disconnected, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.loop.call_soon_threadsafe(self._acked, mid)

    def _on_message(self, client, userdata, msg):
        if self.on_message_cb is not None:
            self.loop.call_soon_threadsafe(self.on_message_cb, msg.topic, bytes(msg.payload), bool(msg.retain))
