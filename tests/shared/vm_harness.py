# Runs one shared test module inside the MicroPython VM and reports each test
# function on its own line, so pytest can show every VM test as its own item.
# Invoked by tests/conftest.py through host/upsycle/mpvm/run.mjs (argv[0] is the
# module name), or by a unix MicroPython given in UPSYCLE_MICROPYTHON. Lines look like:  @@UPSYCLE-RESULT {"name": ..., "ok": ..., ...}
import sys
import time
import json
import io

_MARK = "@@UPSYCLE-RESULT "


def _report(name, ok, ms, error=""):
    print(_MARK + json.dumps({"name": name, "ok": ok, "ms": ms, "error": error}))


def run(modname, only=None):
    try:
        mod = __import__(modname)
    except BaseException as e:  # an import failure fails every test of the module
        buf = io.StringIO()
        sys.print_exception(e, buf)
        _report("__import__", False, 0, buf.getvalue())
        return
    names = sorted(n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n)))
    for name in names:
        if only and name not in only:
            continue
        t0 = time.ticks_ms()
        try:
            getattr(mod, name)()
            _report(name, True, time.ticks_diff(time.ticks_ms(), t0))
        except BaseException as e:
            buf = io.StringIO()
            sys.print_exception(e, buf)
            _report(name, False, time.ticks_diff(time.ticks_ms(), t0), buf.getvalue())


def step(modname, name):
    """One test as its own VM step (tests/conftest.py passes one --code step
    per test): the VM collects garbage only when control returns to Node
    between steps (docs/micropython.md), so a module whose tests together
    allocate more than the VM's 2 GB ceiling still runs, each test from a
    collected heap."""
    import gc
    run(modname, [name])
    gc.collect()   # scheduled: runs once this step returns to Node


# The VM passes the module as argv[0]; a unix MicroPython
# (`micropython tests/shared/vm_harness.py MODULE`) passes the script first.
# "--steps" after the module: only define step() for the steps that follow.
_args = sys.argv[1:] if sys.argv and sys.argv[0].endswith("vm_harness.py") else sys.argv
if _args[1:2] != ["--steps"]:
    run(_args[0], _args[1:])
