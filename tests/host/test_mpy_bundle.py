"""The board build's bundles (host/upsycle/mpy_bundle.py): modules packed
into one namespace behave as the modules did, and what the packing cannot
rewrite faithfully is refused. The virtual board and rig tests run the
node from the packed build (test_boards.py, test_node_vboard.py)."""
import importlib
import sys
import textwrap

import pytest

from upsycle import firmware_build, mpy_bundle

A = """
import struct
LIMIT = 3
_K = 10
def double(x):
    return 2 * x + _K - _K
class Err(Exception):
    pass
"""
B = """
import struct
from pkg import a
from pkg.a import LIMIT as A_LIMIT
_K = 5                       # the same name as a's: renamed in the bundle
state = []
def use(x):
    if x > A_LIMIT:
        raise a.Err("too big")
    return a.double(x) + _K
def remember(x):
    a.LIMIT = x              # another module's global, assigned
    state.append(struct.pack("<B", x))
"""
C = """
from pkg import a, b
from pkg.b import use
NAMES = ("pkg.a", "pkg.c")
def run(x):
    return use(x), a.LIMIT, b.state
"""


# An error family (shared_protocol/errors.py's kind): classes its
# __getattr__ makes on first use, kept out of its globals.
E = """
_MADE = {}
def __getattr__(name):
    if name in ("Bad", "Worse"):
        return _MADE.setdefault(name, type(name, (ValueError,), {}))
    raise AttributeError(name)
"""
F = """
from pkg import e
def check(x, kind="Bad"):
    if x < 0:
        raise e.Bad("negative")
    if x > 9:
        raise getattr(e, kind)("big")
    return x
"""
G = """
from pkg import e, f
def run(x):
    try:
        return f.check(x, "Worse")
    except e.Bad:
        return "bad"
    except e.Worse:
        return "worse"
"""


def _pack(bundled=("pkg.a", "pkg.b"), **mods):
    srcs = {"pkg." + k: (textwrap.dedent(v), False) for k, v in mods.items()}
    srcs["pkg"] = ("", True)
    return mpy_bundle.pack(srcs, (("pkg.bundle", bundled),))


def _load(tmp_path, packed, entry="pkg.c"):
    root = tmp_path / "lib"
    for name, text in packed.items():
        parts = name.split(".")
        path = root.joinpath(*parts[:-1], parts[-1] + ".py") if name != "pkg" else root / "pkg" / "__init__.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sys.path.insert(0, str(root))
    try:
        for m in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
            del sys.modules[m]
        return importlib.import_module(entry), importlib.import_module("pkg.bundle")
    finally:
        sys.path.remove(str(root))


def test_a_bundle_behaves_as_its_modules(tmp_path):
    packed = _pack(a=A, b=B, c=C)
    assert set(packed) == {"pkg", "pkg.bundle", "pkg.c"}
    c, bundle = _load(tmp_path, packed)
    assert c.run(2) == (2 * 2 + 5, 3, [])
    with pytest.raises(bundle.Err):
        c.run(4)
    # b's assignment to a.LIMIT reaches the global every module reads
    [f for n, f in vars(bundle).items() if n.startswith("remember")][0](9)
    assert c.run(4) == (2 * 4 + 5, 9, [b"\x09"])
    # the strings that named a bundled module name the bundle
    assert c.NAMES == ("pkg.bundle", "pkg.c")
    # one module's _K renamed, the other's kept; the import of struct shared
    assert "_K_1" in packed["pkg.bundle"] and packed["pkg.bundle"].count("import struct") == 2


def test_an_error_family_in_a_bundle_makes_its_kinds_through_its_getattr(tmp_path):
    packed = _pack(("pkg.e", "pkg.f"), e=E, f=F, g=G)
    g, bundle = _load(tmp_path, packed, "pkg.g")
    assert (g.run(3), g.run(-1), g.run(10)) == (3, "bad", "worse")
    # one class per kind, made once
    assert g.e.Bad is g.e.Bad and "Bad" not in vars(bundle)


@pytest.mark.parametrize("b, why", [
    ("from pkg import a\nx = a\n", "used as a value"),
    ("def f():\n    return globals()\n", "uses globals"),
    ("from pkg import e\ndef f():\n    e.Bad = 1\n", "made by __getattr__"),
    ("_K = 1\ndef f(_K):\n    return _K\n", "also bound in a function"),
    # another function's `global _K` does not make g's parameter the global
    ("_K = 1\ndef g(_K):\n    return _K\ndef f():\n    global _K\n    _K = 2\n", "also bound in a function"),
    ("from pkg.a import LIMIT as L\ndef f(L):\n    return L\n", "also bound in a function"),
    ("import pkg.a\ndef f():\n    return pkg.a.LIMIT\n", "without 'as'"),
])
def test_what_cannot_be_rewritten_is_refused(b, why):
    with pytest.raises(mpy_bundle.BundleError, match=why):
        _pack(("pkg.e", "pkg.a", "pkg.b"), a=A, b=b, c="", e=E)


def test_the_board_build_packs_every_bundle():
    names = {firmware_build.module_name(r) for r, _ in firmware_build.board_modules()}
    for b, members in mpy_bundle.BUNDLES:
        assert b in names
        assert not names & set(members)
