"""What the bridge writes to the broker: reading payloads and Home Assistant
device-based discovery.

Topics (``P`` = the bridge's prefix, default ``upsycle``; ``D`` = the
discovery prefix, default ``homeassistant``):

    P/<topic>/<node>/<name>          a reading: JSON, retained, QoS 1
    P/<topic>/<node>/availability    online / offline from when the node was last heard
    P/bridge/status                  online; offline is the bridge's last will
    P/<topic>/set/<name>             (read) a value to write into the topic's settings map
    D/device/<device id>/config      discovery: one device per node, retained, QoS 1

Device-based discovery (Home Assistant MQTT docs, "Device discovery
payload"): one retained message per device, with ``device`` and ``origin``
at the root and one entry per entity under ``components``, each with its
platform and ``unique_id``. An entity is removed by publishing the device
again with that component reduced to its platform; the whole device by an
empty retained payload.
"""
import json
import math

from upsycle import __version__
from upsycle.bridge import names

ORIGIN = {"name": "upsycle", "sw_version": __version__}
ONLINE = "online"
OFFLINE = "offline"


def json_value(v, depth=0):
    """A DMC value (CBOR: ints, floats, text, bytes, lists, maps, None) as
    JSON: bytes as hex text, NaN and infinities as null (JSON has none)."""
    if depth > 16:
        return None
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, (list, tuple)):
        return [json_value(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return dict((str(k), json_value(x, depth + 1)) for k, x in v.items())
    return v


def reading_payload(value, unit, t, author, seq):
    """The JSON of one reading. ``seq`` is the author's DMC sequence number:
    with ``author`` it names the reading, so a consumer can tell a QoS 1
    redelivery from a new reading of the same value."""
    return json.dumps({"value": json_value(value), "unit": unit, "time": t,
                       "author": author.hex(), "seq": seq},
                      ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


class Topics:
    """The MQTT topic names for one bridged upsycle topic."""

    def __init__(self, prefix, level):
        self.prefix = prefix
        self.base = "%s/%s" % (prefix, level)

    def reading(self, node, name):
        return "%s/%s/%s" % (self.base, node, names.mqtt_level(name))

    def availability(self, node):
        return "%s/%s/availability" % (self.base, node)

    def set_filter(self):
        return "%s/set/+" % self.base

    def set_prefix(self):
        return "%s/set/" % self.base


def status_topic(prefix):
    return "%s/bridge/status" % prefix


def device_id(topic_id, node):
    return "upsycle_%s_%s" % (topic_id[:8].hex(), node)


def config_topic(discovery_prefix, dev_id):
    return "%s/device/%s/config" % (discovery_prefix, dev_id)


def component(topics, dev_id, node, name, value):
    """One sensor entity of a node's device."""
    dc, unit, sc = names.reading_class(name, value)
    c = {"platform": "sensor", "name": name, "unique_id": "%s_%s" % (dev_id, names.ha_id(name)),
         "state_topic": topics.reading(node, name), "value_template": "{{ value_json.value }}",
         "json_attributes_topic": topics.reading(node, name)}
    if dc is not None:
        c["device_class"] = dc
    if unit is not None:
        c["unit_of_measurement"] = unit
    if sc is not None:
        c["state_class"] = sc
    return c


def device_config(prefix, topics, topic_name, dev_id, node, comps, removed=()):
    """The discovery payload of a node's device. ``comps``: component id ->
    component; ``removed``: component ids to drop (platform only, as HA
    asks before they are left out)."""
    cmps = dict(comps)
    for cid in removed:
        cmps[cid] = {"platform": "sensor"}
    return json.dumps({
        "device": {"identifiers": [dev_id], "name": "%s %s" % (topic_name, node[:8]),
                   "manufacturer": "upsycle", "model": "upsycle node", "serial_number": node},
        "origin": ORIGIN,
        "availability": [{"topic": status_topic(prefix)}, {"topic": topics.availability(node)}],
        "availability_mode": "all",
        "qos": 1,
        "components": cmps,
    }, ensure_ascii=False, sort_keys=True).encode("utf-8")


def unit_of(name, value):
    return names.reading_class(name, value)[1]
