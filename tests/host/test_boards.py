"""Board profiles (boards/*.json) and the mip package of the firmware."""
import json

import pytest

from upsycle import boards, flashing, paths

EXPECTED = {
    # name: (sys.platform, mpy-cross arch)
    "esp32": ("esp32", "xtensawin"),
    "esp32s3": ("esp32", "xtensawin"),
    "esp32c3": ("esp32", "rv32imc"),
    "pico_w": ("rp2", "armv6m"),
    "pico2_w": ("rp2", "armv7emsp"),
    "unix": ("linux", None),
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
    assert have == want, ("firmware/package.json is stale: run `python tools/write_mip_package.py`:\n"
                          + json.dumps(want, indent=1))


def test_every_url_of_the_mip_package_exists():
    import os
    base = os.path.dirname(flashing.MIP_PACKAGE)
    for dest, url in flashing.mip_package()["urls"]:
        assert os.path.isfile(os.path.normpath(os.path.join(base, url))), (dest, url)


def test_mip_install_from_a_package_json(vboard, tmp_path):
    """`mpremote mip install` of a package.json like ours puts the sources in /lib.

    The whole package takes about a minute to copy at mip's 256-byte chunks,
    so this installs the part that `firmware.config` needs, laid out as in
    the repository (firmware/ next to shared_protocol/, relative URLs).
    """
    import os
    # shared_protocol/ and wire/ without __init__.py, as mip installs them
    # (firmware_build.docstring_only): MicroPython imports a folder
    want = {"firmware/__init__.py", "firmware/config.py", "shared_protocol/errors.py",
            "shared_protocol/wire/cbor.py"}
    urls = [u for u in flashing.mip_package()["urls"] if u[0] in want]
    assert len(urls) == len(want)
    (tmp_path / "firmware").mkdir()
    os.symlink(paths.SHARED_PROTOCOL_DIR, tmp_path / "shared_protocol")
    for dest, url in urls:
        if not url.startswith("../"):
            os.symlink(os.path.join(paths.FIRMWARE_DIR, url), tmp_path / "firmware" / url)
    pkg = tmp_path / "firmware" / "package.json"
    pkg.write_text(json.dumps({"urls": urls, "deps": [], "version": "0"}))
    r = vboard.mpremote("mip", "install", str(pkg), timeout=120)
    assert r.stdout.count("Installing") >= len(want), r.stdout
    out = vboard.mpremote("exec", "import sys\nsys.path.append('/lib')\nfrom firmware import config\n"
                                  "from shared_protocol.wire import cbor\nprint('imported', cbor.encode(1))").stdout
    assert "imported b'\\x01'" in out, out
