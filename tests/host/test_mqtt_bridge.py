"""`upsycle bridge mqtt` end to end: a real Mosquitto started here on a
free loopback port, the real proxy process, the real bridge process, and
members publishing sealed DMC readings through the proxy as boards do."""
import asyncio
import json
import os
import time

import pytest

from mqtt_rig import Bridge, HostBoard, Mosquitto, Watcher, one_message, publish
from proxy_rig import cli, free_port, start_proxy
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url

T0 = int(time.time())


class Site:
    """A proxy, a topic, its admin, a broker, and the bridge's home joined."""

    def __init__(self, tmp, topic_name="garden", bridge_write=True, users=None):
        self.tmp = tmp
        self.port = free_port()
        self.data = str(tmp / "proxy")
        self.proxy = start_proxy(self.data, self.port)
        self.admin = Admin(os.urandom(32), os.urandom(32), 0, topic_name)
        self.topic_name = topic_name
        self.bridge_home = tmp / "bridge"
        url = invite_url(self.admin.invite(os.urandom(32), read=True, write=bridge_write))
        r = cli("topic", "join", url, "--home", str(self.bridge_home))
        assert r.returncode == 0, r.stderr
        self.broker = Mosquitto(tmp, users=users)
        self.bridge = None
        self.watcher = None

    def invite(self, write=True):
        return invite_url(self.admin.invite(os.urandom(32), read=True, write=write))

    def start_bridge(self, *extra, env=None):
        self.bridge = Bridge(self.bridge_home, self.port, self.broker.port, *extra, env=env)
        return self.bridge

    def restart_proxy(self, kill=True):
        if kill:
            self.proxy.kill()
        else:
            self.proxy.terminate()
        self.proxy.wait(10)
        self.proxy = start_proxy(self.data, self.port)

    def close(self):
        if self.watcher is not None:
            self.watcher.close()
        if self.bridge is not None:
            self.bridge.stop()
        self.broker.stop()
        if self.proxy.poll() is None:
            self.proxy.terminate()
            self.proxy.wait(10)
        for f in (self.proxy.stdout, self.proxy.stderr):
            if f:
                f.close()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


async def _board_publishes(site, readings, author=None, home="board"):
    b = await HostBoard(site.invite(), site.port, str(site.tmp / home), author=author).start()
    try:
        for name, t, v in readings:
            await b.publish(name, t, v)
    finally:
        await b.close()
    return b


def _values(watcher, base):
    return [(t.rsplit("/", 1)[1], j["value"]) for t, j in watcher.readings(base)]


def test_discovery_and_every_reading_once_in_order(site):
    site.watcher = Watcher(site.broker.port, ("upsycle/#", "homeassistant/#"))
    br = site.start_bridge()
    br.wait_line("event=broker_connected")
    readings = []
    for i in range(12):
        readings.append(("temp", T0 + i, 20 + i / 4))
        readings.append(("humidity", T0 + i, 40 + i))
    readings.append(("rssi", T0 + 12, -61))
    readings.append(("status", T0 + 12, "ok"))
    author = bytes.fromhex("0102030405060708")
    asyncio.run(_board_publishes(site, readings, author=author))
    node = author.hex()
    base = "upsycle/garden/%s/" % node
    w = site.watcher
    w.wait_for(lambda: len(w.readings(base)) >= len(readings), what="every reading")
    time.sleep(1.0)   # nothing more may come
    got = w.readings(base)
    assert [(t.rsplit("/", 1)[1], j["value"]) for t, j in got] == [(n, v) for n, _, v in readings]
    for (t, j), (n, when, v) in zip(got, readings):
        assert t == base + n
        assert j["time"] == when and j["author"] == node
    units = dict((t.rsplit("/", 1)[1], j["unit"]) for t, j in got)
    assert units == {"temp": "°C", "humidity": "%", "rssi": "dBm", "status": None}
    # every reading is retained: a new subscriber gets the latest value
    latest = json.loads(one_message(site.broker.port, base + "temp"))
    assert latest["value"] == 20 + 11 / 4
    # discovery: one device for the node, retained, with every field HA needs
    dev_id = "upsycle_%s_%s" % (site.admin.topic[:8].hex(), node)
    cfg = json.loads(one_message(site.broker.port, "homeassistant/device/%s/config" % dev_id))
    assert cfg["device"]["identifiers"] == [dev_id]
    assert cfg["origin"]["name"] == "upsycle" and cfg["origin"]["sw_version"]
    assert cfg["availability_mode"] == "all"
    assert {"topic": "upsycle/bridge/status"} in cfg["availability"]
    assert {"topic": base + "availability"} in cfg["availability"]
    cmps = cfg["components"]
    assert set(cmps) == {"temp", "humidity", "rssi", "status"}
    uids = set()
    for cid, c in cmps.items():
        assert c["platform"] == "sensor"
        assert c["state_topic"] == base + cid
        assert c["value_template"] == "{{ value_json.value }}"
        uids.add(c["unique_id"])
    assert len(uids) == 4
    assert (cmps["temp"]["device_class"], cmps["temp"]["unit_of_measurement"],
            cmps["temp"]["state_class"]) == ("temperature", "°C", "measurement")
    assert cmps["humidity"]["device_class"] == "humidity"
    assert cmps["rssi"]["device_class"] == "signal_strength"
    assert "device_class" not in cmps["status"] and "state_class" not in cmps["status"]
    # discovery retained and QoS 1; published once for a new entity each
    disc = w.topics("homeassistant/device/")
    assert disc and all(p for _, p, _ in disc)
    assert one_message(site.broker.port, "upsycle/bridge/status") == b"online"
    assert one_message(site.broker.port, base + "availability") == b"online"
    # Home Assistant restarts: its birth message brings discovery again
    n = len(w.topics("homeassistant/device/"))
    publish(site.broker.port, "homeassistant/status", b"online")
    w.wait_for(lambda: len(w.topics("homeassistant/device/")) > n, what="discovery again")
    # a clean stop says offline (the last will covers an unclean one)
    assert site.bridge.stop() == 0
    assert one_message(site.broker.port, "upsycle/bridge/status") == b"offline"
    # a reading delivered again after a restart is not published again
    before = len(w.readings(base))
    site.bridge.start()
    site.bridge.wait_line("event=broker_connected")
    time.sleep(2)
    assert len(w.readings(base)) == before


def test_bridge_killed_last_will_and_no_reading_published_twice(site):
    """SIGKILL: the broker sends the last will; the replica and the proxy's
    cursor make the restarted bridge publish only what is new."""
    site.watcher = Watcher(site.broker.port, ("upsycle/#",))
    br = site.start_bridge()
    br.wait_line("event=broker_connected")
    author = os.urandom(8)
    asyncio.run(_board_publishes(site, [("temp", T0 + i, i) for i in range(5)], author=author))
    base = "upsycle/garden/%s/" % author.hex()
    w = site.watcher
    w.wait_for(lambda: len(w.readings(base)) == 5, what="5 readings")
    time.sleep(0.5)
    br.kill()
    w.wait_for(lambda: ("upsycle/bridge/status", b"offline", False) in w.topics("upsycle/bridge/status"),
               timeout=KEEPALIVE_WAIT_S, what="the last will")
    br.start()
    br.wait_line("event=broker_connected")
    asyncio.run(_board_publishes(site, [("temp", T0 + 5 + i, 5 + i) for i in range(3)], home="board2"))
    w.wait_for(lambda: len(w.readings("upsycle/garden/")) >= 8, what="8 readings")
    time.sleep(1.5)
    vals = [j["value"] for _, j in w.readings("upsycle/garden/")]
    assert sorted(vals) == list(range(8)), vals


# Mosquitto sends the will of a client whose socket closed at once; this
# is margin for a loaded machine.
KEEPALIVE_WAIT_S = 15
