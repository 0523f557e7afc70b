"""The board build's shorter names (upsycle/mpy_names.py): what it renames,
what it leaves, that the check catches a rename that changed more than
names, and that a node's modules intern few enough names to stay under
MicroPython's 1,280-slot qstr pool."""
import ast
import textwrap

import pytest

from upsycle import boards, firmware_build, flashing, mpy_bundle, mpy_names


def _rename(src, others=(), **kw):
    src = textwrap.dedent(src)
    trees = [ast.parse(src)] + [ast.parse(textwrap.dedent(o)) for o in others]
    out, pairs = mpy_names.rename(src, mpy_names.used_names(trees),
                                  attrs=mpy_names.private_attributes(trees), **kw)
    mpy_names.check(src, out, pairs)
    return out, dict(pairs)


def _run(src, expr):
    ns = {}
    exec(src, ns)
    return eval(expr, ns)


def test_parameters_and_private_globals_get_short_shared_names_and_work_the_same():
    src = """
    _TABLE = (1, 2, 3)
    def _helper(value, scale):
        return [v * scale for v in value]
    def total(items, factor):
        def inner(extra):
            return sum(_helper(items, factor)) + extra
        return inner(len(_TABLE))
    """
    out, pairs = _rename(src)
    assert pairs["_TABLE"].startswith("_") and pairs["_helper"].startswith("_")
    assert "value" not in out and "scale" not in out and "extra" not in out
    # inner's first parameter may not be q0: it reads total's q0 (items)
    assert _run(out, "total([1, 2], 10)") == _run(textwrap.dedent(src), "total([1, 2], 10)") == 33
    # public names stay unless asked
    assert "def total(" in out
    out2, pairs2 = _rename(src, public=True)
    assert "total" in pairs2


def test_names_that_could_be_looked_up_by_text_stay():
    src = """
    _KEPT = 1
    _SHADOWED = 2
    def f(by_keyword, positional):
        return by_keyword + positional
    def g(x):
        _SHADOWED = x          # a local of the same name: the global stays
        return _SHADOWED
    def h(self, other):
        return getattr(self, "_KEPT")
    """
    caller = "f(1, by_keyword=2)"
    out, pairs = _rename(src, others=[caller])
    assert "by_keyword" in out and "positional" not in out
    assert "_KEPT" not in pairs and "_SHADOWED" not in pairs
    assert "self" not in pairs


def test_the_app_api_keeps_its_parameter_names():
    src = """
    def publish(node, topic, key, value):
        node.publish(topic, key, value)
    def _private(node, thing):
        return thing
    """
    out, pairs = _rename(src, app_api=True)
    assert "def publish(node, topic, key, value)" in out
    assert "thing" not in out


def test_private_attributes_of_a_class_family_share_short_names():
    src = """
    class Base:
        __slots__ = ("_count", "_seen")
        def __init__(self):
            self._count = 0
            self._seen = []
        def _bump(self, x):
            self._count += 1
            self._seen.append(x)
    class Child(Base):
        __slots__ = ()
        def add(self, x):
            self._bump(x)
            return self._count
    class Other:
        def __init__(self):
            self._count = 5         # another family: may share a short name
            self._peek = None
    def reach(o):
        return o._peek              # read through another object: stays
    """
    out, pairs = _rename(src)
    assert "_count" in pairs and "_bump" in pairs and "_seen" in pairs
    assert "_peek" in out
    ns = {}
    exec(out, ns)
    c = ns["Child"]()
    assert c.add("a") == 1 and c.add("b") == 2
    assert not hasattr(c, "_count")


def test_host_only_functions_nothing_on_the_board_names_are_dropped():
    src = """
    def _helper(x):
        return x * 2
    def host_api(x):
        return _helper(x) + 1
    def used(x):
        return x + 1
    def by_other_module(x):
        return x
    def _deco(f):
        return f
    @_deco
    def decorated(x):
        return x
    class HostOnly:
        pass
    RESULT = used(1)
    """
    out, pairs = _rename(src, others=["m.by_other_module(1)"], public=True)
    assert pairs["host_api"] is None and pairs["_helper"] is None and pairs["HostOnly"] is None
    assert pairs["used"] and "by_other_module" not in pairs and pairs["decorated"] and pairs["_deco"]
    assert "def by_other_module(" in out and out.count("def ") == 4
    assert _run(out, pairs["used"] + "(1)") == 2
    # the check holds the kept ones to the source, the dropped ones gone
    with pytest.raises(mpy_names.NamesError):
        mpy_names.check(textwrap.dedent(src), out, {p for p in pairs.items() if p[1] is not None})


def test_the_check_catches_a_rename_that_changes_more_than_names():
    src = "def f(a, b):\n    return a - b\n"
    wrong = "def f(q0, q1):\n    return q1 - q0\n"
    with pytest.raises(mpy_names.NamesError):
        mpy_names.check(src, wrong, {("a", "q0"), ("b", "q1")})
    with pytest.raises(mpy_names.NamesError):
        mpy_names.check(src, "def f(q0, q1):\n    return q0 - q1\n", {("a", "q0")})


def test_every_board_module_is_renamed_and_checked():
    modules = firmware_build.board_modules()
    keep = firmware_build._board_sources(modules)
    renamed = 0
    for remote, src in modules:
        out, pairs = firmware_build.board_source(src, remote, keep)   # FlashError if the check fails
        renamed += out != ast.unparse(ast.parse(src)) + "\n"
    assert renamed > 40


def _lan_node_names(build_dir):
    """The names a LAN node's modules bring to a board (their .mpy qstr
    tables less the ROM names), for the modules a node with 2 topics loads."""
    from firmware import preload, runtime
    mods = set(preload.TOPICS) | set(preload.LINK) | set(preload.LAN) | set(runtime.BOOT_ONLY) | {
        "shared_protocol.noise.handshake", "shared_protocol.noise.known"} | {b for b, _ in mpy_bundle.BUNDLES}
    names = set()
    for local, remote in flashing.build(boards.load("unix"), build_dir):
        if remote.endswith(".mpy") and firmware_build.module_name(remote) in mods:
            with open(local, "rb") as f:
                names.update(mpy_names.interned(f.read()))
    return names


def test_a_lan_node_brings_fewer_names_than_the_qstr_threshold_allows(tmp_path):
    """A board grows its qstr pools 20, 40, ... 640 slots, then 1,280 (9 KB
    of heap) at its 1,261st interned name (docs/node.md). The names a LAN
    node's modules bring must leave room under the threshold for an app's
    (flashing.NODE_MODULE_NAMES_MAX: on the rig 1,195 of them made 1,155
    interned names, the runtime's own names fewer than those its firmware
    has in ROM)."""
    names = _lan_node_names(str(tmp_path / "b"))
    assert len(names) <= flashing.NODE_MODULE_NAMES_MAX, len(names)


def test_the_build_writes_down_what_each_short_name_stands_for(tmp_path):
    import json
    import os
    files = flashing.build(boards.load("unix"), str(tmp_path / "b"))
    # ed25519 is packed into the topics bundle (mpy_bundle.BUNDLES)
    local = [l for l, r in files if r == "lib/shared_protocol/bundle_topics.mpy"][0]
    tree_dir = os.path.dirname(os.path.dirname(os.path.dirname(local)))
    names = json.load(open(os.path.join(tree_dir, firmware_build.NAMES_FILE)))
    short = dict(names["shared_protocol.bundle_topics"])
    assert "_double_scalarmult_vartime" in short.values()
    fn = [s for s, n in short.items() if n == "_double_scalarmult_vartime"][0]
    assert fn in mpy_names.interned(open(local, "rb").read())
