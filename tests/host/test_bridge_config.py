"""The bridge's pure parts: names on the MQTT side, the name -> Home
Assistant class mapping, discovery payloads, and its configuration."""
import argparse
import json
import re

import pytest

from upsycle.bridge import config, discovery, names
from upsycle.proxy.config import Config as ProxyConfig


def test_mqtt_levels_never_hold_wildcards_or_separators_and_never_collide():
    assert names.mqtt_level("garden") == "garden"
    assert names.mqtt_level("jardín") == "jardín"          # MQTT topics are UTF-8
    seen = set()
    for n in ("a/b", "a+b", "a#b", "a_b", "a\x00b", "a\nb", "+", "#", "/"):
        lv = names.mqtt_level(n)
        assert not re.search(r"[/+#\x00-\x1f]", lv), lv
        assert lv not in seen
        seen.add(lv)
    assert len(names.mqtt_level("x" * 500)) <= names.LEVEL_MAX
    with pytest.raises(names.BadName):
        names.mqtt_level("")


def test_ha_ids_are_ascii_word_characters_and_distinct():
    ids = [names.ha_id(n) for n in ("temp", "tempé", "temp+", "temp_")]
    assert ids[0] == "temp" and ids[3] == "temp_"
    assert len(set(ids)) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)


@pytest.mark.parametrize("name,value,want", [
    ("temp", 21.5, ("temperature", "°C", "measurement")),
    ("soil_temp", 12, ("temperature", "°C", "measurement")),
    ("temp2", 12, ("temperature", "°C", "measurement")),
    ("Air-Humidity", 50, ("humidity", "%", "measurement")),
    ("battery", 88, ("battery", "%", "measurement")),
    ("energy", 1.5, ("energy", "kWh", "total_increasing")),
    ("rssi", -70, ("signal_strength", "dBm", "measurement")),
    ("count", 3, (None, None, "measurement")),
    ("temp", "hot", (None, None, None)),
    ("temp", True, (None, None, None)),
])
def test_reading_classes(name, value, want):
    assert names.reading_class(name, value) == want


def test_reading_payload_is_json_for_every_dmc_value():
    p = json.loads(discovery.reading_payload(b"\x01\x02", None, 5, b"\xaa", 3))
    assert p == {"value": "0102", "unit": None, "time": 5, "author": "aa", "seq": 3}
    p = json.loads(discovery.reading_payload(float("nan"), "°C", 5, b"\xaa", 3))
    assert p["value"] is None
    p = json.loads(discovery.reading_payload({"a": [1, b"\xff"]}, None, 5, b"\xaa", 3))
    assert p["value"] == {"a": [1, "ff"]}


def test_removed_component_keeps_only_its_platform():
    t = discovery.Topics("upsycle", "garden")
    c = discovery.component(t, "dev", "n1", "temp", 1.0)
    cfg = json.loads(discovery.device_config("upsycle", t, "garden", "dev", "n1", {"temp": c}, removed=["hum"]))
    assert cfg["components"]["hum"] == {"platform": "sensor"}
    assert cfg["components"]["temp"]["unique_id"] == "dev_temp"


def _args(**kw):
    d = dict(config=None, home=None, proxy=None, proxy_key=None, udp=False, insecure=False, topic=None,
             level=None, broker=None, username=None, password_file=None, prefix=None, discovery_prefix=None,
             stale_after=None, client_id=None)
    d.update(kw)
    return argparse.Namespace(**d)


def test_config_from_toml_and_flags_override(tmp_path, monkeypatch):
    monkeypatch.delenv("UPSYCLE_MQTT_PASSWORD", raising=False)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    f = tmp_path / "site.toml"
    f.write_text('data = "/var/lib/upsycle"\n\n[bridge.mqtt]\nbroker = "10.0.0.2"\ntopics = ["garden"]\n'
                 'username = "u"\npassword_file = "%s"\nstale_after = 60\n[bridge.mqtt.levels]\n"a b" = "ab"\n' % pw)
    c = config.load(_args(config=str(f), home=str(tmp_path), prefix="site1"))
    assert (c.broker_host, c.broker_port) == ("10.0.0.2", 1883)
    assert c.topics == ["garden"] and c.username == "u" and c.password == "s3cret"
    assert c.stale_after == 60 and c.prefix == "site1" and c.levels == {"a b": "ab"}
    # the proxy reads the same file and leaves the bridge's section alone
    assert ProxyConfig.load(str(f)).data == "/var/lib/upsycle"


@pytest.mark.parametrize("kw,toml", [
    (dict(prefix="a/+"), ""),
    (dict(stale_after=1.0), ""),
    (dict(level=["x"]), ""),
    ({}, "[bridge.mqtt]\nbrokr = \"x\"\n"),
    ({}, "[bridge.mqtt]\nlevels = {a = \"b/c\"}\n"),
    (dict(proxy_key="abcd"), ""),
])
def test_config_refuses_bad_values(tmp_path, kw, toml):
    path = None
    if toml:
        path = tmp_path / "c.toml"
        path.write_text(toml)
    with pytest.raises(config.ConfigError):
        config.load(_args(config=str(path) if path else None, home=str(tmp_path), **kw))
