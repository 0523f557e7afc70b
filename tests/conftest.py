"""Pytest runs every module in tests/shared/ twice: on CPython, as usual, and
inside the real MicroPython 1.27 VM (WebAssembly build, run by Node).

Each VM test is its own pytest item named ``<test>[micropython]``. The module
runs once per session in one Node process (upsycle/mpvm/run.mjs, which refuses
imports real boards lack); its results are handed out to the items. A missing
Node or VM package fails these items: it never skips them.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(ROOT, "tests", "shared")
VECTORS_DIR = os.path.join(ROOT, "tests", "vectors")
MARK = "@@UPSYCLE-RESULT "
# A module's VM run may take long (pure-Python crypto is slow in the VM), but
# must not hang CI: past this the module's tests fail.
VM_MODULE_TIMEOUT_S = int(os.environ.get("UPSYCLE_VM_TIMEOUT", "900"))

# Tests leave nothing running. Every process a test starts inherits this
# mark in its environment (so do its children, even once their parent is
# gone), unique per pytest process (each xdist worker sets its own), and
# the session ends with a check for marked processes still alive.
PROC_MARK_VAR = "UPSYCLE_TEST_RUN"
os.environ[PROC_MARK_VAR] = "%d-%d" % (os.getpid(), time.time_ns())
# Time given to processes that are exiting when the session ends (a proxy
# that got SIGTERM commits first) before they count as left behind.
LEFT_RUNNING_GRACE_S = 10.0

sys.path.insert(0, SHARED_DIR)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "host"))


class VMRunError(Exception):
    pass


_vm_results = {}


def run_module_in_vm(modname):
    """Run tests/shared/<modname>.py in the VM; return {test name: result}."""
    if modname in _vm_results:
        return _vm_results[modname]
    from upsycle import vm
    try:
        cmd = vm.command(mounts=[("tests/shared", SHARED_DIR), ("tests/vectors", VECTORS_DIR)])
    except vm.VMUnavailable as e:
        raise VMRunError("%s: run the README's test command, which installs it" % e)
    harness = os.path.join(SHARED_DIR, "vm_harness.py")
    # each test its own step (vm_harness.step): the VM's heap is collected
    # between steps only, and a module's tests together may allocate more
    # than its 2 GB (pure-Python SHA-512 over a million bytes, then 1,000
    # X25519 ladders, is near that)
    steps = []
    for name in sorted(_test_names(os.path.join(SHARED_DIR, modname + ".py"))):   # the order run() keeps
        steps += ["--code", "step(%r, %r)" % (modname, name)]
    try:
        proc = subprocess.run(
            cmd + ["--arg", modname, "--arg", "--steps", "--file", harness] + steps,
            capture_output=True, text=True, timeout=VM_MODULE_TIMEOUT_S, cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        res = {"__crash__": "VM run of %s exceeded %d s" % (modname, VM_MODULE_TIMEOUT_S)}
        _vm_results[modname] = res
        return res
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            r = json.loads(line[len(MARK):])
            results[r["name"]] = r
    if proc.returncode != 0:
        results["__crash__"] = "VM exited %d\nstdout:\n%s\nstderr:\n%s" % (
            proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
    results["__output__"] = proc.stdout
    _vm_results[modname] = results
    return results


def _test_names(path):
    """The test functions of a shared test module, in file order."""
    import ast
    with open(path) as f:
        tree = ast.parse(f.read())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


class VMModule(pytest.File):
    def collect(self):
        for name in _test_names(self.path):
            yield VMItem.from_parent(self, name=name + "[micropython]", testname=name)


class VMItem(pytest.Item):
    def __init__(self, *, testname, **kw):
        super().__init__(**kw)
        self.testname = testname
        self.add_marker("micropython")

    def runtest(self):
        modname = self.path.stem
        results = run_module_in_vm(modname)
        if "__import__" in results:
            raise VMTestFailure("module failed to import in the VM:\n" + results["__import__"]["error"])
        r = results.get(self.testname)
        if r is None:
            raise VMTestFailure("no result from the VM for %s\n%s" % (
                self.testname, results.get("__crash__", results.get("__output__", "")[-2000:])))
        if not r["ok"]:
            raise VMTestFailure(r["error"])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, (VMTestFailure, VMRunError)):
            return "MicroPython VM: " + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, "%s [micropython]" % self.testname


class VMTestFailure(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "micropython: runs inside the MicroPython VM")


def pytest_collect_file(parent, file_path):
    if (file_path.suffix == ".py" and file_path.name.startswith("test_")
            and str(file_path.parent) == SHARED_DIR):
        return VMModule.from_parent(parent, path=file_path, name=file_path.name + "::vm")
    return None


def marked_processes(mark):
    """[(pid, command line)] of live processes whose environment carries mark."""
    needle = ("%s=%s" % (PROC_MARK_VAR, mark)).encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
            if needle not in env:
                continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue   # gone meanwhile, or not ours to read
        found.append((int(d), cmd))
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running():
    """Fails the run if a process a test started is alive at its end (and
    then ends it, so the run still leaves nothing behind)."""
    yield
    mark = os.environ[PROC_MARK_VAR]
    deadline = time.monotonic() + LEFT_RUNNING_GRACE_S
    left = marked_processes(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked_processes(mark)
    if left:
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        pytest.fail("processes started by the tests are still running at the end of the session "
                    "(now killed):\n" + "\n".join("  %d %s" % (pid, cmd[:200]) for pid, cmd in left),
                    pytrace=False)


@pytest.fixture(autouse=True)
def own_upsycle_home(tmp_path_factory, monkeypatch):
    """Each test gets its own $UPSYCLE_HOME. The client remembers proxy keys
    per host:port there on first use; with one shared home (the user's
    ~/.upsycle), a test meeting a new proxy on a port an earlier test's proxy
    had used is refused with proxy_key_mismatch. Tests that set their own
    home override this."""
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path_factory.mktemp("upsycle-home")))
