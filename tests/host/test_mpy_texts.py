"""The board build's texts on the flash (host/upsycle/mpy_texts.py): the
firmware's log lines and the error families' lists of kinds move into
lib/firmware/texts.txt, each read back exactly where the string stood,
and what cannot be moved faithfully is refused. The virtual board's tests
run the node from this build (its log lines come from the file there:
test_node_vboard.py waits for them)."""
import ast
import os
import sys
import textwrap

import pytest

from upsycle import firmware_build, mpy_texts

LOGS = textwrap.dedent('''
    """A firmware module: its docstring stays a docstring."""
    import sys
    def run(log, n, e):
        """upsycle: not a log line, a docstring"""
        log("upsycle: started")
        log("upsycle: %d readings, %s" % (n, e))
        log("upsycle: status " + str(n))
        log("short")
        return "upsycle: started"
''')
FAMILY = textwrap.dedent('''
    from shared_protocol.errors import kind
    KINDS = """
    FooError RemoteError foo
    """
    _MADE = {"__name__": __name__}
    def __getattr__(name):
        return _MADE.get(name) or kind(name, KINDS, _MADE)
''')


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id == name]


def test_log_lines_move_and_read_back_as_they_were():
    out, blob = mpy_texts.move({"firmware.a": (LOGS, False), "firmware.b": (LOGS, False),
                                "shared_protocol.x": (LOGS, False)})
    tree = ast.parse(out["firmware.a"][0])
    calls = _calls(tree, "_text")
    got = [blob[c.args[0].value:c.args[0].value + c.args[1].value].decode() for c in calls]
    assert sorted(got) == sorted(["upsycle: started", "upsycle: %d readings, %s", "upsycle: status ",
                                  "upsycle: started"])
    # formatted where the % stood, with the values as one argument
    fmt = [c for c in calls if len(c.args) == 3]
    assert len(fmt) == 1 and ast.unparse(fmt[0].args[2]) == "((n, e),)"
    assert "from firmware.platform import text as _text" in out["firmware.a"][0]
    # the docstrings and short strings stay; each text is stored once
    assert ast.get_docstring(tree) and ast.get_docstring(tree.body[3]) == "upsycle: not a log line, a docstring"
    assert "'short'" in out["firmware.a"][0]
    assert blob.count(b"upsycle: started") == 1
    assert out["firmware.b"][0] == out["firmware.a"][0]
    # shared_protocol has no log lines of its own: left as it was
    assert out["shared_protocol.x"] == (LOGS, False)


def test_a_family_reads_its_kinds_from_the_flash_only_when_it_makes_a_class():
    out, blob = mpy_texts.move({"shared_protocol.fam": (FAMILY, False)})
    src = out["shared_protocol.fam"][0]
    assert "KINDS" not in src
    ref, = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Tuple) and n.elts
            and isinstance(n.elts[0], ast.Name) and n.elts[0].id == "_read_line"]
    at, n = ref.elts[1].value, ref.elts[2].value
    assert blob[at:at + n].decode() == "\nFooError RemoteError foo\n"
    assert "from firmware.platform import read_line as _read_line" in src
    assert "_MADE.get(name) or kind(name, (_read_line, %d, %d), _MADE)" % (at, n) in src


def test_a_real_family_moved_to_the_flash_makes_the_same_classes(tmp_path, monkeypatch):
    """shared_protocol/groups/errors.py as the board build writes it, its
    kinds read from a real texts file a line at a time, against the
    source: the same codes, bases and may_clear; an unknown name is an
    AttributeError; a made kind is not read again (the file removed)."""
    import types
    from firmware import platform
    from shared_protocol.groups import errors as source
    with open(source.__file__, encoding="utf-8") as f:
        out, blob = mpy_texts.move({"shared_protocol.groups.errors": (f.read(), False)})
    os.makedirs(tmp_path / "firmware")
    (tmp_path / "firmware" / "texts.txt").write_bytes(blob)
    monkeypatch.setattr(platform, "_texts", None)
    monkeypatch.setattr(sys, "path", sys.path + [str(tmp_path)])
    moved = types.ModuleType("moved_group_errors")
    exec(compile(out["shared_protocol.groups.errors"][0], "moved", "exec"), moved.__dict__)
    names = [line.split()[0] for line in source.KINDS.splitlines() if line]
    assert len(names) > 15
    for name in names:
        a, b = getattr(moved, name), getattr(source, name)
        assert (a.code, a.__name__, getattr(a, "may_clear", None)) == (b.code, b.__name__, getattr(b, "may_clear", None))
        assert [c.__name__ for c in a.__mro__] == [c.__name__ for c in b.__mro__]
    with pytest.raises(AttributeError):
        moved.NoSuchKind
    (tmp_path / "firmware" / "texts.txt").unlink()
    assert moved.Replayed is getattr(moved, "Replayed")


@pytest.mark.parametrize("src, why", [
    ("KINDS = 'a b c'\nX = KINDS\n", "read outside a function"),
    ("KINDS = 'a b c'\ndef f():\n    global KINDS\n    KINDS = 'x'\n", "declares KINDS global"),
    ("KINDS = 'a b c'\ndef f():\n    return KINDS\nfor KINDS in ():\n    pass\n", "bound again"),
    ("KINDS = 'a'\nKINDS = 'b'\ndef f():\n    return KINDS\n", "twice"),
    ("KINDS = 'a'\ndef f(KINDS):\n    return KINDS\n", "argument"),
    ("KINDS = '\\nA LocalError a'\ndef f():\n    return KINDS\n", "start and end with a newline"),
])
def test_a_kinds_string_that_must_stay_in_the_heap_is_refused(src, why):
    with pytest.raises(mpy_texts.TextsError, match=why):
        mpy_texts.move({"shared_protocol.fam": (src, False)})


@pytest.mark.parametrize("src, why", [
    ("def f(n):\n    print(f'upsycle: {n} readings')\n", "f-string"),
    ("_text = 1\nprint('upsycle: hello')\n", "binds _text"),
    ("def f(_read_line):\n    print('upsycle: hello')\n", "binds _read_line"),
])
def test_a_log_line_that_cannot_move_is_refused(src, why):
    with pytest.raises(mpy_texts.TextsError, match=why):
        mpy_texts.move({"firmware.m": (src, False)})


def test_the_board_build_moves_every_log_line_of_the_firmware():
    """Every "upsycle: ..." string of the firmware's board modules (but the
    reader's own) is in the texts file, and every _text call of the build
    points at one of them, whole."""
    modules, blob = firmware_build.board_files()
    wanted = set()
    for local, remote in firmware_build.source_files():
        if remote.startswith("lib/firmware/") and remote.endswith(".mpy") and not remote.endswith("/platform.mpy"):
            with open(local, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
            wanted |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs
                       and isinstance(n.value, str) and n.value.startswith(mpy_texts.PREFIX)}
    assert len(wanted) > 30
    found = set()
    for remote, text in modules:
        tree = ast.parse(text)
        refs = [c.args for c in _calls(tree, "_text")] + [
            t.elts[1:] for t in ast.walk(tree) if isinstance(t, ast.Tuple) and t.elts
            and isinstance(t.elts[0], ast.Name) and t.elts[0].id == "_read_line"]
        for r in refs:
            at, n = r[0].value, r[1].value
            found.add(blob[at:at + n].decode())
        if remote.startswith("lib/firmware/") and not remote.endswith("/platform.mpy"):
            left = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                    and n.value.startswith(mpy_texts.PREFIX)]
            assert left == [], (remote, left)
    assert wanted <= found
    assert {s for s in found if not s.startswith(mpy_texts.PREFIX)}, "no family's kinds moved"


def test_platform_reads_a_text_and_says_which_one_when_it_cannot(tmp_path, monkeypatch):
    from firmware import platform
    os.makedirs(tmp_path / "lib" / "firmware")
    (tmp_path / "lib" / "firmware" / "texts.txt").write_bytes("upsycle: hello °%d°upsycle: bye".encode())
    monkeypatch.setattr(platform, "_texts", None)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "nowhere"), str(tmp_path / "lib")])
    n = len("upsycle: hello °%d°".encode())
    assert platform.text(0, n, (7,)) == "upsycle: hello °7°"
    assert platform.text(n, 12) == "upsycle: bye"
    assert platform.read_text(n, 12) == "upsycle: bye"
    # past the end: the file is another build's
    with pytest.raises(OSError):
        platform.read_text(n, 40)
    assert platform.text(n, 40, ("x",)) == "upsycle: log text %d 'x'" % n
    # a line of a region, found by its first word
    lines = b"\nFoo RemoteError foo\nBar Foo bar clear\n"
    (tmp_path / "lib" / "firmware" / "texts.txt").write_bytes(b"xyz" + lines + b"upsycle: next")
    assert platform.read_line(3, len(lines), "Bar") == "Bar Foo bar clear"
    assert platform.read_line(3, len(lines), "Foo") == "Foo RemoteError foo"
    assert platform.read_line(3, len(lines), "Fo") is None
    assert platform.read_line(3, len(lines) - 5, "Bar") == "Bar Foo bar clear"   # a line that starts inside
    assert platform.read_line(3, len(lines), "upsycle:") is None                   # not past the region
    # no file on any path: a log line still comes out, a kinds read raises
    monkeypatch.setattr(platform, "_texts", None)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "nowhere")])
    assert platform.text(3, 5) == "upsycle: log text 3 None"
    with pytest.raises(OSError):
        platform.read_text(3, 5)
    with pytest.raises(OSError):
        platform.read_line(3, 5, "Foo")
