# The node's /config.json parser (firmware/config.py), on CPython and in the
# MicroPython VM: every bad file is a ConfigError with a code, never a crash.
import json

from rig import raises
from firmware import config

SEED = "11" * 32
PUB = "22" * 32


def _good(**changes):
    cfg = {
        "format": 1, "board": "pico_w", "node_key": SEED, "node_id": PUB,
        "wifi": [{"ssid": "field-ap", "password": "longenough"}],
        "proxies": ["192.168.1.10:7400"], "topics": ["upsy://invite/1"],
        "publish_interval_s": 30,
    }
    for k in changes:
        if changes[k] is None:
            del cfg[k]
        else:
            cfg[k] = changes[k]
    return json.dumps(cfg).encode()


def test_accepts_a_good_config():
    cfg = config.parse(_good(), "rp2")
    assert cfg["node_id"] == PUB and cfg["publish_interval_s"] == 30


def test_interval_defaults_to_a_minute():
    assert config.parse(_good(publish_interval_s=None), "rp2")["publish_interval_s"] == 60


def test_rejects_bad_files_with_a_code():
    cases = [
        (b"", "config.corrupt"),
        (b"{\"format\": 1, \"board\"", "config.corrupt"),
        (b"\xff\xfe garbage", "config.corrupt"),
        (b"[1, 2]", "config.corrupt"),
        (b" " * (config.CONFIG_MAX_BYTES + 1), "config.too_large"),
        (_good(format=2), "config.format"),
        (_good(proxies=["192.168.1.10:7400@xyz"]), "config.proxy"),
        (_good(proxies=["192.168.1.10:7400@" + "ab" * 31]), "config.proxy"),
        (_good(board="toaster"), "config.unknown_board"),
        (_good(board="esp32"), "config.wrong_board"),
        (_good(node_key="zz" * 32), "config.node_key"),
        (_good(node_key=SEED[:-2]), "config.node_key"),
        (_good(node_id=None), "config.node_id"),
        (_good(wifi=[{"ssid": "", "password": ""}]), "config.wifi"),
        (_good(wifi=[{"ssid": "x" * 33, "password": ""}]), "config.wifi"),
        (_good(wifi=[{"ssid": "ap", "password": "short"}]), "config.wifi"),
        (_good(wifi=["ap"]), "config.wifi"),
        (_good(wifi={"ssid": "ap"}), "config.type"),
        (_good(wifi=[{"ssid": "a%d" % i, "password": ""} for i in range(config.WIFI_MAX + 1)]), "config.limit"),
        (_good(proxies=["nohost"]), "config.proxy"),
        (_good(proxies=["h:0"]), "config.proxy"),
        (_good(proxies=["h:99999"]), "config.proxy"),
        (_good(proxies=[":7400"]), "config.proxy"),
        (_good(topics=[""]), "config.topic"),
        (_good(topics=["x" * (config.TOPIC_MAX_CHARS + 1)]), "config.topic"),
        (_good(topics=[7]), "config.topic"),
        (_good(publish_interval_s=0), "config.interval"),
        (_good(publish_interval_s="60"), "config.interval"),
        (_good(publish_interval_s=config.INTERVAL_MAX_S + 1), "config.interval"),
    ]
    for data, code in cases:
        e = raises(config.ConfigError, config.parse, data, "rp2")
        assert e.code == code, (data[:60], e.code, code)
        assert e.message, code


def test_missing_file_is_a_config_error():
    e = raises(config.ConfigError, config.load, "rp2", "/no/such/dir/config.json")
    assert e.code == "config.missing"
    assert "upsycle flash" in e.message


def test_every_known_board_names_its_platform():
    for board in config.KNOWN_BOARDS:
        data = _good(board=board)
        assert config.parse(data, config.KNOWN_BOARDS[board])["board"] == board


def test_proxy_may_carry_a_pinned_key():
    key = "ab" * 32
    cfg = config.parse(_good(proxies=["192.168.1.10:7400@" + key]), "rp2")
    assert config.split_proxy_key(cfg["proxies"][0]) == ("192.168.1.10:7400", bytes.fromhex(key))
    assert config.split_proxy_key("192.168.1.10:7400") == ("192.168.1.10:7400", None)


def test_every_optional_section_is_checked():
    """lan, sleep, app and link: a bad value is a ConfigError here, so
    `upsycle flash` refuses it before writing anything (the runtime trusts
    the parsed config)."""
    good = dict(lan={"port": 47000, "peers": ["192.168.1.20:47000"]}, sleep={"awake_s": 20, "sleep_s": 600},
                app={"readings": 5}, link="plaintext", replica={"log_keep": 32})
    cfg = config.parse(_good(**good), "rp2")
    assert cfg["lan"]["port"] == 47000 and cfg["sleep"]["sleep_s"] == 600 and cfg["app"]["readings"] == 5
    assert cfg["replica"]["log_keep"] == 32
    assert config.parse(_good(lan={"port": 47000}), "rp2")["lan"] == {"port": 47000}   # broadcast
    bad = [
        (dict(lan={"port": 0}), "config.lan"),
        (dict(lan={"port": 70000}), "config.lan"),
        (dict(lan={"port": True}), "config.lan"),
        (dict(lan=[47000]), "config.lan"),
        (dict(lan={"port": 47000, "peers": ["nohost"]}), "config.lan"),
        (dict(lan={"port": 47000, "peers": ["h:0"]}), "config.lan"),
        (dict(lan={"port": 47000, "peers": [5]}), "config.lan"),
        (dict(lan={"port": 47000, "peers": "h:1"}), "config.type"),
        (dict(lan={"port": 47000, "peers": ["h:%d" % (i + 1) for i in range(config.LAN_PEERS_MAX + 1)]}),
         "config.limit"),
        (dict(sleep={"awake_s": 0, "sleep_s": 600}), "config.sleep"),
        (dict(sleep={"awake_s": 20}), "config.sleep"),
        (dict(sleep={"awake_s": 20, "sleep_s": config.SLEEP_MAX_S + 1}), "config.sleep"),
        (dict(sleep=600), "config.sleep"),
        (dict(app={"readings": -1}), "config.app"),
        (dict(app={"readings": "5"}), "config.app"),
        (dict(app=3), "config.app"),
        (dict(link="tls"), "config.link"),
        (dict(replica={"log_keep": 0}), "config.replica"),
        (dict(replica={"log_keep": 513}), "config.replica"),
        (dict(replica={"log_keep": True}), "config.replica"),
        (dict(replica={}), "config.replica"),
        (dict(replica=64), "config.replica"),
    ]
    for changes, code in bad:
        e = raises(config.ConfigError, config.parse, _good(**changes), "rp2")
        assert e.code == code, (changes, e.code)


def test_transport_ble_and_its_proxy_entries():
    key = "ab" * 32
    cfg = config.parse(_good(transport="ble", wifi=[], proxies=["ble@" + key]), "rp2")
    assert cfg["transport"] == "ble"
    assert config.parse(_good(transport="ble", proxies=["ble"]), "rp2")["proxies"] == ["ble"]
    assert config.parse(_good(transport="wifi+ble"), "rp2")["transport"] == "wifi+ble"
    cases = [
        (_good(transport="bluetooth"), "config.transport"),
        (_good(transport=7), "config.transport"),
        (_good(transport="ble", link="plaintext", proxies=["ble"]), "config.transport"),
        (_good(transport="ble"), "config.proxy"),                       # a UDP proxy without WiFi
        (_good(proxies=["ble"]), "config.proxy"),                       # a BLE proxy without BLE
        (_good(transport="wifi+ble", proxies=["ble"]), "config.proxy"),
        (_good(transport="ble", proxies=["ble@xyz"]), "config.proxy"),
    ]
    for data, code in cases:
        e = raises(config.ConfigError, config.parse, data, "rp2")
        assert e.code == code, (data, e.code)


def test_proxy_mode_is_failover_or_all():
    two = ["192.168.1.10:7400", "192.168.1.11:7400"]
    assert config.parse(_good(proxies=two, proxy_mode="all"), "rp2")["proxy_mode"] == "all"
    assert config.parse(_good(proxies=two, proxy_mode="failover"), "rp2")["proxy_mode"] == "failover"
    assert "proxy_mode" not in config.parse(_good(proxies=two), "rp2")   # failover when unset
    cases = [
        _good(proxy_mode="both"),
        _good(proxy_mode=1),
        _good(proxy_mode=["all"]),
        _good(transport="ble", proxies=["ble"], proxy_mode="all"),
    ]
    for data in cases:
        e = raises(config.ConfigError, config.parse, data, "rp2")
        assert e.code == "config.proxy_mode", (data, e.code)
