"""The flash build cache (flashing.build): per user, private, and a cached
.mpy is used only if it is still the file that was compiled."""
import os
import stat

import pytest

from upsycle import boards, flashing


def test_default_cache_is_per_user_and_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files = flashing.build(boards.load("virtual"))
    d = tmp_path / "cache" / "upsycle" / "build"
    assert stat.S_IMODE(os.stat(str(d)).st_mode) == 0o700
    assert all(local.startswith(str(d)) for local, remote in files if remote.endswith(".mpy"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert flashing.build_dir_for() == str(tmp_path / "home" / ".cache" / "upsycle" / "build")


def test_a_planted_mpy_is_compiled_again_not_copied(tmp_path):
    build = str(tmp_path / "build")
    first = dict((remote, open(local, "rb").read()) for local, remote in flashing.build(boards.load("virtual"), build))
    victim = [local for local, remote in flashing.build(boards.load("virtual"), build)
              if remote == "lib/firmware/runtime.mpy"][0]
    with open(victim, "wb") as f:
        f.write(b"M\x06planted code")                # the source stamp beside it is untouched
    again = dict((remote, open(local, "rb").read()) for local, remote in flashing.build(boards.load("virtual"), build))
    assert again["lib/firmware/runtime.mpy"] == first["lib/firmware/runtime.mpy"]
    assert b"planted" not in again["lib/firmware/runtime.mpy"]


def test_a_cache_others_can_write_is_refused(tmp_path):
    d = tmp_path / "shared-build"
    d.mkdir()
    os.chmod(str(d), 0o777)
    with pytest.raises(flashing.FlashError) as e:
        flashing.build(boards.load("virtual"), str(d))
    assert "writable by other users" in str(e.value)
