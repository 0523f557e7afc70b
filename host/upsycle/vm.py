"""Run code in the MicroPython 1.27 VM (WebAssembly build under Node).

Host-side driver of mpvm/run.mjs (in this package): the demo, the
benchmarks, the tests and the virtual board use it. The VM sees the board
code (shared_protocol/, firmware/) under /proj and only the modules real
board firmware has (mpvm/board_modules.json).

The VM itself is an npm package pinned by mpvm/package-lock.json. In a
checkout, tools/setup.sh installs it beside run.mjs; an installed package
(pip) installs it on first use into a per-user cache, with npm, from the
same lock file.
"""
import hashlib
import os
import shutil
import subprocess
import sys

from upsycle import paths

RUNNER = os.path.join(paths.MPVM_DIR, "run.mjs")
LOCK_FILE = os.path.join(paths.MPVM_DIR, "package-lock.json")
VM_PACKAGE = os.path.join("@micropython", "micropython-webassembly-pyscript")
VM_MODULE = "micropython.mjs"
# npm ci of the one pinned package takes seconds; a stalled registry must
# not hang the command.
NPM_TIMEOUT_S = 300


class VMUnavailable(RuntimeError):
    """Node or the MicroPython VM package is not installed."""


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    with open(LOCK_FILE, "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:16]
    return os.path.join(base, "upsycle", "mpvm-" + key)


def _package_in(prefix):
    return os.path.join(prefix, "node_modules", VM_PACKAGE)


def vm_module(install=True):
    """The path of the VM's micropython.mjs: beside run.mjs (a checkout),
    else in the per-user cache, installed there first if need be."""
    for prefix in (paths.MPVM_DIR, _cache_dir()):
        if os.path.isdir(_package_in(prefix)):
            return os.path.join(_package_in(prefix), VM_MODULE)
    if not install:
        raise VMUnavailable("MicroPython VM missing: run tools/setup.sh (a checkout) or any `upsycle` "
                            "command that needs it (an installed package)")
    return os.path.join(_install(_cache_dir()), VM_MODULE)


def _install(prefix):
    npm = shutil.which("npm")
    if npm is None:
        raise VMUnavailable("npm is not installed; the MicroPython VM comes from npm "
                            "(Debian: apt-get install nodejs npm)")
    os.makedirs(prefix, exist_ok=True)
    for f in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(paths.MPVM_DIR, f), os.path.join(prefix, f))
    print("upsycle: installing the MicroPython VM (npm ci, once) into %s" % prefix, file=sys.stderr)
    r = subprocess.run([npm, "ci", "--prefix", prefix, "--no-audit", "--no-fund", "--loglevel=error"],
                       capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    if r.returncode != 0 or not os.path.isdir(_package_in(prefix)):
        raise VMUnavailable("npm ci of the MicroPython VM failed: %s" % (r.stderr.strip()[-500:]))
    return _package_in(prefix)


def check():
    """The node executable, once the VM is there (raises VMUnavailable)."""
    node = shutil.which("node")
    if node is None:
        raise VMUnavailable("node is not installed (Debian: apt-get install nodejs; tools/setup.sh does)")
    vm_module()
    return node


def command(mounts=(), heap=None):
    """argv for run.mjs: the board code mounted under /proj, plus mounts
    [(path under /proj, host directory)]. Steps and args go after it."""
    cmd = [check(), RUNNER, "--vm", vm_module()]
    for name, d in [("shared_protocol", paths.SHARED_PROTOCOL_DIR), ("firmware", paths.FIRMWARE_DIR)] + list(mounts):
        cmd += ["--mount", "%s=%s" % (name, d)]
    if heap:
        cmd += ["--heap", str(heap)]
    return cmd


def run(steps, args=(), timeout=600, heap=None, mounts=()):
    """Run code steps in one VM; return the CompletedProcess (text mode).

    steps: list of Python source strings, each its own runPython call, so the
    VM's garbage collector runs between them.
    """
    cmd = command(mounts, heap)
    for a in args:
        cmd += ["--arg", str(a)]
    for s in steps:
        cmd += ["--code", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
