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


class Stream:
    """A board publishing N readings, one every ``gap`` seconds, in a thread."""

    def __init__(self, site, n, gap=0.05, home="stream"):
        import threading
        self.n = n
        self.author = os.urandom(8)
        self.error = None
        self.done = threading.Event()

        def main():
            async def go():
                b = await HostBoard(site.invite(), site.port, str(site.tmp / home), author=self.author).start()
                try:
                    for i in range(n):
                        await b.publish("temp", T0 + i, i)
                        await asyncio.sleep(gap)
                finally:
                    await b.close()
            try:
                asyncio.run(go())
            except Exception as e:   # the test asserts on it
                self.error = e
            self.done.set()
        self.t = threading.Thread(target=main, daemon=True)
        self.t.start()

    def join(self, timeout=60):
        assert self.done.wait(timeout), "the board did not finish publishing"
        assert self.error is None, repr(self.error)


def _seqs(watcher, base):
    # The watcher re-subscribes when it reconnects after the broker's
    # restart, and then gets the latest retained reading of each entity
    # again ahead of its queued ones: a copy of state, not part of the stream.
    return [(j["author"], j["seq"], j["value"]) for _, j in watcher.readings(base, stream=True)]


def test_broker_restarted_mid_stream_nothing_lost_nothing_twice(site):
    # A subscriber with a persistent session: the broker keeps its queue
    # across the restart (Mosquitto saves it when stopped).
    site.watcher = Watcher(site.broker.port, ("upsycle/garden/#",), client_id="ha-like", clean=False)
    br = site.start_bridge()
    br.wait_line("event=broker_connected")
    s = Stream(site, 80, gap=0.05)
    base = "upsycle/garden/%s/" % s.author.hex()
    w = site.watcher
    w.wait_for(lambda: len(w.readings(base)) >= 20, what="20 readings")
    site.broker.stop()
    time.sleep(2.0)           # readings keep coming to the bridge meanwhile
    site.broker.start()
    s.join()
    w.wait_for(lambda: len(_seqs(w, base)) >= 80, timeout=60, what="80 readings")
    time.sleep(1.0)
    got = _seqs(w, base)
    # Nothing lost, in order. The broker stopped between forwarding a
    # reading and its PUBACK reaching the bridge may see it again from the
    # bridge (MQTT 3.1.1 §4.3.2: QoS 1 is at least once; the bridge sends
    # again what was not acknowledged): the same author and seq, so a
    # consumer tells it apart; only readings in flight at the stop.
    firsts, seen, again = [], set(), []
    for a, q, v in got:
        if (a, q) in seen:
            again.append(v)
            continue
        seen.add((a, q))
        firsts.append(v)
    assert firsts == list(range(80)), got
    from upsycle.bridge.broker import INFLIGHT_MAX
    assert len(again) <= INFLIGHT_MAX, again
    # and the same reading is never in two different payloads
    assert len(set(p for _, p, _ in w.topics(base) if b'"seq"' in p)) == 80
    br.wait_line("event=broker_lost")
    assert sum("event=broker_connected" in l for l in br.lines) >= 2


def test_proxy_killed_mid_stream_nothing_lost_nothing_twice(site):
    site.watcher = Watcher(site.broker.port, ("upsycle/garden/#",))
    br = site.start_bridge()
    br.wait_line("event=broker_connected")
    s = Stream(site, 80, gap=0.05)
    base = "upsycle/garden/%s/" % s.author.hex()
    w = site.watcher
    w.wait_for(lambda: len(w.readings(base)) >= 20, what="20 readings")
    site.restart_proxy(kill=True)
    w.wait_for(lambda: len(w.readings(base)) >= 40, what="40 readings")
    site.restart_proxy(kill=True)
    s.join()
    w.wait_for(lambda: len(_seqs(w, base)) >= 80, timeout=60, what="80 readings")
    time.sleep(1.5)
    got = _seqs(w, base)
    assert [v for _, _, v in got] == list(range(80)), got


def test_reverse_write_reaches_a_board_replica(site):
    site.watcher = Watcher(site.broker.port, ("upsycle/#",))
    br = site.start_bridge()
    br.wait_line("event=broker_connected")

    async def go():
        b = await HostBoard(site.invite(), site.port, str(site.tmp / "board"), author=os.urandom(8)).start(
            subscribe=True)
        try:
            await b.receive(0.5)
            publish(site.broker.port, "upsycle/garden/set/fan", b"true")
            publish(site.broker.port, "upsycle/garden/set/target", b'{"temp": 21.5}')
            for _ in range(60):
                await b.receive(0.5)
                if len(b.changes) >= 2:
                    break
            return b.changes, b.replica
        finally:
            await b.close()
    changes, replica = asyncio.run(go())
    assert [(k, v) for k, v, _ in changes] == [("fan", True), ("target", {"temp": 21.5})]
    assert replica.get("settings", "fan") is True
    assert len(set(a for _, _, a in changes)) == 1     # the bridge's own DMC author
    br.wait_line("event=set_written")


def test_reverse_write_refused_without_write_capability(tmp_path):
    site = Site(tmp_path, bridge_write=False)
    try:
        site.watcher = Watcher(site.broker.port, ("upsycle/#",))
        br = site.start_bridge()
        br.wait_line("event=broker_connected")

        async def go():
            b = await HostBoard(site.invite(), site.port, str(site.tmp / "board")).start(subscribe=True)
            try:
                await b.receive(0.5)
                publish(site.broker.port, "upsycle/garden/set/fan", b"true")
                await b.receive(3.0)
                return b.changes
            finally:
                await b.close()
        assert asyncio.run(go()) == []
        br.wait_line("cause=no_write_capability")
        assert any("read-only invite" in l for l in br.lines)
        # still bridging readings
        asyncio.run(_board_publishes(site, [("temp", T0, 1.5)], home="board2"))
        site.watcher.wait_for(lambda: len(site.watcher.readings("upsycle/garden/")) == 1, what="a reading")
        assert br.proc.poll() is None
    finally:
        site.close()


def test_bad_set_input_refused_and_nothing_lost(site):
    site.watcher = Watcher(site.broker.port, ("upsycle/#",))
    # A retained command is delivered again on every subscription: one
    # stored before the bridge starts is not a new command.
    publish(site.broker.port, "upsycle/garden/set/old", b"1", retain=True)
    br = site.start_bridge()
    br.wait_line("event=broker_connected")

    async def go():
        b = await HostBoard(site.invite(), site.port, str(site.tmp / "board")).start(subscribe=True)
        try:
            await b.receive(0.5)
            publish(site.broker.port, "upsycle/garden/set/fan", b"{not json")
            publish(site.broker.port, "upsycle/garden/set/fan", b"\xff\xfe")
            publish(site.broker.port, "upsycle/garden/set/fan", b"1" * 100000)
            publish(site.broker.port, "upsycle/garden/set/" + "n" * 65, b"1")
            publish(site.broker.port, "upsycle/garden/set/fan", b'"on"')
            for _ in range(40):
                await b.receive(0.5)
                if b.changes:
                    break
            await b.receive(1.0)
            return b.changes
        finally:
            await b.close()
    changes = asyncio.run(go())
    assert [(k, v) for k, v, _ in changes] == [("fan", "on")]
    for cause in ("not_json", "oversize", "bad_name", "retained"):
        assert sum("cause=%s " % cause in l for l in br.lines) >= 1, (cause, br.lines[-20:])
    assert sum("cause=not_json " in l for l in br.lines) == 2
    # the bridge still bridges
    asyncio.run(_board_publishes(site, [("temp", T0, 3.25)], home="board2"))
    site.watcher.wait_for(lambda: any(j["value"] == 3.25 for _, j in site.watcher.readings("upsycle/garden/")),
                          what="a reading after the bad input")
    assert br.proc.poll() is None


def test_topic_and_reading_names_with_wildcards_and_unicode(tmp_path):
    site = Site(tmp_path, topic_name="jardín+#/2")
    try:
        site.watcher = Watcher(site.broker.port, ("upsycle/#", "homeassistant/#"))
        br = site.start_bridge()
        br.wait_line("event=broker_connected")
        author = os.urandom(8)
        asyncio.run(_board_publishes(site, [("température+1", T0, 19.5), ("a/b#", T0, 2), ("temp", T0, 3)],
                                     author=author))
        w = site.watcher
        w.wait_for(lambda: len(w.readings("upsycle/")) >= 3, what="3 readings")
        topics = [t for t, _ in w.readings("upsycle/")]
        from upsycle.bridge import names
        level = names.mqtt_level("jardín+#/2")
        assert level.startswith("jardín___2~")
        node = author.hex()
        assert topics[2] == "upsycle/%s/%s/temp" % (level, node)
        for t in topics:
            assert "+" not in t and "#" not in t and t.count("/") == 3
        assert topics[0].startswith("upsycle/%s/%s/température_1~" % (level, node))
        disc = [(t, json.loads(p)) for t, p, _ in w.topics("homeassistant/device/") if p]
        import re
        for t, cfg in disc:
            assert re.fullmatch(r"homeassistant/device/[A-Za-z0-9_-]+/config", t), t
            for cid, c in cfg["components"].items():
                assert re.fullmatch(r"[A-Za-z0-9_-]+", cid) and re.fullmatch(r"[A-Za-z0-9_-]+", c["unique_id"])
                assert c["state_topic"] in topics
        # a set command under the cleaned level reaches the topic
        publish(site.broker.port, "upsycle/%s/set/mode" % level, b"2")
        br.wait_line("event=set_written")
    finally:
        site.close()


def test_broker_refusing_bad_credentials(tmp_path):
    site = Site(tmp_path, users={"bridge": "right-password"})
    try:
        asyncio.run(_board_publishes(site, [("temp", T0 + i, i) for i in range(3)]))
        pw = tmp_path / "pw"
        pw.write_text("wrong-password\n")
        br = site.start_bridge("--mqtt-user", "bridge", "--mqtt-password-file", str(pw))
        assert br.proc.wait(30) == 1
        br._t.join(5)
        out = "\n".join(br.lines)
        assert "refused the connection" in out and "nothing was taken from the proxy" in out, out
        # nothing accepted is lost: with the right password every reading arrives
        pw.write_text("right-password\n")
        import paho.mqtt.client as mqtt
        site.watcher = None
        seen = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.username_pw_set("bridge", "right-password")
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("upsycle/#", qos=1)
        c.on_message = lambda cl, u, m: seen.append((m.topic, bytes(m.payload)))
        c.connect("127.0.0.1", site.broker.port)
        c.loop_start()
        try:
            br = site.start_bridge("--mqtt-user", "bridge", "--mqtt-password-file", str(pw))
            end = time.monotonic() + 30
            while time.monotonic() < end and sum(1 for t, _ in seen if t.endswith("/temp")) < 3:
                time.sleep(0.1)
            vals = [json.loads(p)["value"] for t, p in seen if t.endswith("/temp")]
            assert vals == [0, 1, 2]
        finally:
            c.loop_stop()
            c.disconnect()
    finally:
        site.close()


def test_leaving_a_topic_removes_its_entities(tmp_path):
    site = Site(tmp_path)
    try:
        other = Admin(os.urandom(32), os.urandom(32), 0, "barn")
        r = cli("topic", "join", invite_url(other.invite(os.urandom(32), read=True)), "--home", str(site.bridge_home))
        assert r.returncode == 0, r.stderr
        site.watcher = Watcher(site.broker.port, ("upsycle/#", "homeassistant/#"))
        br = site.start_bridge()
        br.wait_line("event=broker_connected")
        author = os.urandom(8)
        asyncio.run(_board_publishes(site, [("temp", T0, 1)], author=author))
        dev = "upsycle_%s_%s" % (site.admin.topic[:8].hex(), author.hex())
        cfg_topic = "homeassistant/device/%s/config" % dev
        w = site.watcher
        w.wait_for(lambda: any(t == cfg_topic and p for t, p, _ in w.msgs), what="discovery")
        assert br.stop() == 0
        br = site.start_bridge("--topic", "barn")
        br.wait_line("event=topic_left")
        w.wait_for(lambda: any(t == cfg_topic and p == b"" for t, p, _ in w.msgs), what="the empty config")
        assert one_message(site.broker.port, cfg_topic, timeout=2) is None
        assert one_message(site.broker.port, "upsycle/garden/%s/temp" % author.hex(), timeout=2) is None
    finally:
        site.close()


def test_bridge_killed_while_the_broker_is_down_loses_nothing(site):
    """Readings the bridge took from the proxy while the broker was away are
    not acknowledged to the proxy: killed then, the bridge gets them again
    from the proxy after its restart and publishes them."""
    site.watcher = Watcher(site.broker.port, ("upsycle/garden/#",), client_id="keeper", clean=False)
    br = site.start_bridge()
    br.wait_line("event=broker_connected")
    author = os.urandom(8)
    board = HostBoard(site.invite(), site.port, str(site.tmp / "board"), author=author)

    async def publish_some(rng):
        await board.start()
        try:
            for i in rng:
                await board.publish("temp", T0 + i, i)
        finally:
            await board.close()
    asyncio.run(publish_some(range(3)))
    base = "upsycle/garden/%s/" % author.hex()
    w = site.watcher
    w.wait_for(lambda: len(w.readings(base)) == 3, what="3 readings")
    site.broker.stop()
    br.wait_line("event=broker_lost")
    board.client = type(board.client)("127.0.0.1", site.port, identity=os.urandom(32),
                                      home=str(site.tmp / "board"))
    asyncio.run(publish_some(range(3, 8)))
    time.sleep(2.0)       # the bridge has them by now, waiting for the broker
    br.kill()
    site.broker.start()
    br.start()
    try:
        w.wait_for(lambda: len(set(j["seq"] for _, j in w.readings(base))) == 8, timeout=60, what="8 readings")
    except AssertionError as e:
        raise AssertionError("%s\nbridge:\n%s" % (e, "\n".join(br.lines[-30:])))
    assert sorted(set(j["value"] for _, j in w.readings(base))) == list(range(8))


def test_a_reading_delivered_twice_is_published_once(site):
    """A board that resets before the proxy's ack seals its outbox op again
    (a new group sequence number, firmware/runtime.py _fill_window), and a
    publication can reach the topic through two proxies under two message
    ids: the proxy stores each copy, the bridge publishes the reading once."""
    site.watcher = Watcher(site.broker.port, ("upsycle/garden/#",))
    br = site.start_bridge()
    br.wait_line("event=broker_connected")
    author = os.urandom(8)

    async def go():
        b = await HostBoard(site.invite(), site.port, str(site.tmp / "board"), author=author).start()
        try:
            op = await b.publish("temp", T0, 1)
            again = b.member.seal(op, os.urandom(32), int(time.time()))      # resealed after a reset
            await b.client.publish(b.member.topic, again)
            await b.client.publish(b.member.topic, again)                      # same bytes, new message id
            await b.publish("temp", T0 + 1, 2)
        finally:
            await b.close()
    asyncio.run(go())
    base = "upsycle/garden/%s/" % author.hex()
    w = site.watcher
    w.wait_for(lambda: len(w.readings(base)) >= 2, what="2 readings")
    time.sleep(1.5)
    assert [j["value"] for _, j in w.readings(base)] == [1, 2]
    br.wait_line("code=group_replay")


def test_a_member_removed_by_a_rekey_loses_its_entities(site):
    site.watcher = Watcher(site.broker.port, ("upsycle/#", "homeassistant/#"))
    br = site.start_bridge()
    br.wait_line("event=broker_connected")
    gone, stays = os.urandom(8), os.urandom(8)
    invites = {}

    async def go():
        boards = {}
        for a, home in ((gone, "b1"), (stays, "b2")):
            b = await HostBoard(site.invite(), site.port, str(site.tmp / home), author=a).start()
            await b.publish("temp", T0, 1)
            boards[a] = b
        # the admin removes the first board; the re-key travels the topic
        parts = site.admin.remove(boards[gone].member.identity.public, os.urandom(32), os.urandom(32))
        for part in parts:
            await boards[stays].client.publish(site.admin.topic, part)
        for b in boards.values():
            await b.close()
    asyncio.run(go())
    w = site.watcher
    cfg = lambda a: "homeassistant/device/upsycle_%s_%s/config" % (site.admin.topic[:8].hex(), a.hex())
    w.wait_for(lambda: any(t == cfg(gone) and p == b"" for t, p, _ in w.msgs), what="the removed node's config")
    br.wait_line("event=node_removed")
    assert one_message(site.broker.port, cfg(gone), timeout=2) is None
    assert one_message(site.broker.port, "upsycle/garden/%s/temp" % gone.hex(), timeout=2) is None
    assert json.loads(one_message(site.broker.port, cfg(stays)))["components"]["temp"]


def test_unreachable_broker_is_retried_and_a_stop_is_not_held_up(site):
    br = Bridge(site.bridge_home, site.port, free_port())    # nothing listens there
    time.sleep(3)
    assert br.proc.poll() is None        # retrying, not exiting
    t = time.monotonic()
    assert br.stop() == 0
    assert time.monotonic() - t < 5


def test_compact_readings_and_a_batch_are_each_published_in_order(site):
    """Boards send compact readings (the author's key and capability once)
    and batches of readings under one signature (docs/private-groups.md):
    the host codec opens them, the bridge publishes every reading."""
    site.watcher = Watcher(site.broker.port, ("upsycle/garden/#",))
    br = site.start_bridge()
    br.wait_line("event=broker_connected")
    author = os.urandom(8)

    async def go():
        b = await HostBoard(site.invite(), site.port, str(site.tmp / "board"), author=author).start()
        try:
            for i in range(3):
                op = b.replica.append("temp", T0 + i, i)
                await b.client.publish(b.member.topic, b.member.seal_reading(op, os.urandom(32), int(time.time())))
            ops = [b.replica.append("temp", T0 + i, i) for i in range(3, 8)]
            await b.client.publish(b.member.topic, b.member.seal_batch(ops, os.urandom(32), int(time.time())))
        finally:
            await b.close()
    asyncio.run(go())
    base = "upsycle/garden/%s/" % author.hex()
    w = site.watcher
    w.wait_for(lambda: len(w.readings(base)) >= 8, what="8 readings")
    time.sleep(1.0)
    assert [j["value"] for _, j in w.readings(base)] == list(range(8))
