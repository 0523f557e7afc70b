"""Board profiles (boards/*.json) and the mip package of the firmware."""
import json

import pytest

from upsycle import boards, flashing

EXPECTED = {
    # name: (sys.platform, mpy-cross arch)
    "esp32": ("esp32", "xtensawin"),
    "esp32s3": ("esp32", "xtensawin"),
    "esp32c3": ("esp32", "rv32imc"),
    "pico_w": ("rp2", "armv6m"),
    "virtual": ("webassembly", None),
}


def test_every_target_board_has_a_valid_profile():
    assert set(boards.names()) >= set(EXPECTED)
    for name, (platform, arch) in EXPECTED.items():
        p = boards.load(name)
        assert (p["platform"], p["mpy_cross_arch"]) == (platform, arch), name
        assert p["micropython"] == "%d.%d" % flashing.PINNED_MICROPYTHON, name
        assert "wifi" in p["radios"] and p["heap_bytes"] > p["stack_budget_bytes"] > 0, name
        assert "pin" in p["led"] and "kind" in p["sensor"], name


def test_profiles_agree_with_the_firmware_board_list():
    from firmware import config
    for p in boards.all_profiles():
        assert config.KNOWN_BOARDS.get(p["name"]) == p["platform"], p["name"]


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(boards.BoardError) as e:
        boards.load("toaster")
    assert "pico_w" in str(e.value) and "esp32c3" in str(e.value)
    with pytest.raises(boards.BoardError):
        boards.load("../pyproject")


def test_mip_package_json_is_current():
    with open(flashing.MIP_PACKAGE) as f:
        have = json.load(f)
    want = flashing.mip_package()
    assert have == want, ("firmware/package.json is stale; regenerate it (boards/README.md):\n"
                          + json.dumps(want, indent=1))


def test_mip_install_from_the_package_json(vboard):
    """`mpremote mip install firmware/package.json` puts the sources in /lib."""
    r = vboard.mpremote("mip", "install", "firmware/package.json")
    assert "Installing" in r.stdout, r.stdout
    out = vboard.mpremote("exec", "import sys\nsys.path.append('/lib')\nfrom firmware import config\n"
                                  "from shared_protocol import cbor\nprint('imported', cbor.encode(1))").stdout
    assert "imported b'\\x01'" in out, out
