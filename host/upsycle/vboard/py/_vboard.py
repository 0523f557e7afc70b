# The virtual board's runtime, imported before boot.py in every VM.
#
# Runs code the way MicroPython's pyexec does on a board (boot.py, main.py,
# raw-REPL commands) and hides the ways the WebAssembly VM differs from board
# firmware: Emscripten errno numbers (os/open errors are remapped to
# MicroPython's, which mpremote parses), the missing asyncio.run (here it
# starts the app as a task and returns; see host/upsycle/vboard/README.md), the
# missing os.urandom, and modules the WebAssembly build has but boards lack.
import builtins
import io
import sys

import _vboard_js as _js
import asyncio

# Emscripten (WASI numbering) -> MicroPython py/mperrno.h (Linux numbering).
# Only the numbers a filesystem or socket call can raise are listed; anything
# else passes through unchanged.
_ERRNO = {
    63: 1, 44: 2, 71: 3, 27: 4, 29: 5, 60: 6, 1: 7, 45: 8, 8: 9, 12: 10,
    6: 11, 48: 12, 2: 13, 21: 14, 10: 16, 20: 17, 75: 18, 43: 19, 54: 20,
    31: 21, 28: 22, 41: 23, 33: 24, 59: 25, 74: 26, 22: 27, 51: 28, 70: 29,
    69: 30, 34: 31, 64: 32, 18: 33, 68: 34, 55: 39, 37: 36, 58: 95,
    3: 98, 4: 99, 13: 103, 14: 111, 73: 110, 15: 104, 26: 115, 7: 114,
}

# Modules the WebAssembly build ships but ESP32/RP2 firmware does not: board
# code that imports them here would fail on hardware. A copy installed on the
# board (say by `mpremote mip install`) under / or /lib is allowed.
_NOT_ON_BOARDS = (
    "abc", "base64", "copy", "datetime", "fnmatch", "functools", "gzip", "hmac",
    "html", "inspect", "itertools", "locale", "logging", "operator", "pathlib",
    "stat", "string", "tarfile", "types", "unittest", "uu", "uctypes", "zlib",
    "typing", "dataclasses", "enum", "__future__", "secrets", "jsffi",
)
# Directories of the VM that are not part of the board's flash.
HIDDEN = ("dev", "proc", "vboard")

_globals = None
_app_tasks = []


def _remap(e):
    if isinstance(e, OSError) and e.args and isinstance(e.args[0], int):
        n = _ERRNO.get(e.args[0])
        if n is not None:
            return OSError(n)
    return e


def _wrap(fn):
    def call(*a):
        try:
            return fn(*a)
        except OSError as e:
            raise _remap(e)
    return call


def _install_os():
    import os as real
    import _vboard_os as shim
    g = shim.__dict__
    for name in dir(real):
        if name not in g and not name.startswith("__"):
            g[name] = getattr(real, name)
    for name in ("stat", "mkdir", "rmdir", "remove", "rename", "chdir", "statvfs", "unlink"):
        if hasattr(real, name):
            g[name] = _wrap(getattr(real, name))
    real_ilistdir = real.ilistdir

    def ilistdir(path=""):
        try:
            items = list(real_ilistdir(path))
        except OSError as e:
            raise _remap(e)
        if (path or real.getcwd()) in ("/", "/."):
            items = [i for i in items if i[0] not in HIDDEN]
        # littlefs on a board gives (name, type, inode, size); the VM's
        # POSIX VFS leaves the size out, and mpremote's `fs ls` shows it.
        base = path.rstrip("/") + "/" if path else ""
        out = []
        for i in items:
            if len(i) < 4:
                size = real.stat(base + i[0])[6] if i[1] == 0x8000 else 0
                i = (i[0], i[1], i[2], size)
            out.append(i)
        return iter(out)

    def listdir(path=""):
        return [i[0] for i in ilistdir(path)]

    def urandom(n):
        return bytes.fromhex(_js.urandom(n))

    from collections import namedtuple
    uname_result = namedtuple("uname_result", ("sysname", "nodename", "release", "version", "machine"))

    def uname():
        return uname_result("webassembly", "vboard", "1.27.0", "v1.27.0 on 2025-12-10",
                            "upsycle virtual board " + _js.boardName())

    def statvfs(path="/"):
        # A 2 MiB littlefs-like flash with 4 KiB blocks: enough for the
        # firmware, small enough that `mpremote df` looks like a board.
        used = (_js.usedBytes() + 4095) // 4096
        return (4096, 4096, 512, 512 - used, 512 - used, 0, 0, 0, 0, 255)

    g["ilistdir"] = ilistdir
    g["listdir"] = listdir
    g["urandom"] = urandom
    g["uname"] = uname
    g["statvfs"] = statvfs
    sys.modules["os"] = shim
    sys.modules["uos"] = shim

    real_open = builtins.open

    def open_(*a, **kw):
        try:
            return real_open(*a, **kw)
        except OSError as e:
            raise _remap(e)
    builtins.open = open_


def _install_guard():
    orig = builtins.__import__

    def _board_import(name, *args):
        top = name.split(".")[0]
        if top in _NOT_ON_BOARDS and top not in sys.modules and not _on_flash(top):
            raise ImportError("no module named '%s' (board firmware lacks it; the virtual board refuses it too)" % name)
        return orig(name, *args)
    builtins.__import__ = _board_import


def _on_flash(name):
    import os
    for base in ("/", "/lib/"):
        for suffix in (".py", ".mpy", ""):
            try:
                os.stat(base + name + suffix)
                return True
            except OSError:
                pass
    return False


def init(g):
    global _globals
    _globals = g
    _install_os()
    asyncio.run = run
    _install_guard()


# --- running code like pyexec ------------------------------------------------

def _format(e):
    buf = io.StringIO()
    sys.print_exception(e, buf)
    return buf.getvalue()


def exec_source(src, filename):
    """Run source in __main__; return None, an error text, or 'EXIT' (sys.exit)."""
    try:
        code = compile(src, filename, "exec")
        exec(code, _globals)
    except SystemExit:
        return "EXIT"
    except BaseException as e:
        return _format(e)
    return None


def exec_file(path):
    """pyexec_file_if_exists: '' if the file is absent."""
    try:
        with open(path) as f:
            src = f.read()
    except OSError:
        return ""
    err = exec_source(src, path)
    if err and err != "EXIT":
        sys.stdout.write(err)
        return None
    return err


# --- asyncio.run: the app runs as tasks on Node's event loop -----------------

def run(coro):
    """Start the app and return at once (on a board asyncio.run blocks).

    The virtual board keeps its REPL input handled by Node while the app
    runs; Ctrl-C cancels the app like KeyboardInterrupt on a board.
    """
    t = asyncio.create_task(_guard(coro))
    _app_tasks.append(t)
    _js.appStarted()


async def _guard(coro):
    err = None
    try:
        await coro
    except asyncio.CancelledError:
        err = "Traceback (most recent call last):\nKeyboardInterrupt: \n"
    except SystemExit:
        err = "EXIT"
    except BaseException as e:
        err = _format(e)
    me = asyncio.current_task()
    if me in _app_tasks:
        _app_tasks.remove(me)
    if not _app_tasks:
        _js.appDone(err or "")


def app_running():
    return len(_app_tasks) > 0


def interrupt():
    """Ctrl-C: cancel the app's tasks."""
    for t in list(_app_tasks):
        t.cancel()
