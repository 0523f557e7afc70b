"""Run code in the MicroPython 1.27 VM (WebAssembly build under Node).

Host-side driver of tools/mpvm/run.mjs: the demo, the benchmarks and the
virtual board use it. The VM sees the project's board code under /proj and
only the modules real board firmware has.
"""
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(ROOT, "tools", "mpvm", "run.mjs")
VM_PACKAGE = os.path.join(ROOT, "tools", "mpvm", "node_modules", "@micropython",
                          "micropython-webassembly-pyscript")


class VMUnavailable(RuntimeError):
    """Node or the MicroPython VM package is not installed."""


def check():
    node = shutil.which("node")
    if node is None:
        raise VMUnavailable("node is not installed (run tools/setup.sh)")
    if not os.path.isdir(VM_PACKAGE):
        raise VMUnavailable("MicroPython VM missing: run `npm ci --prefix tools/mpvm` (tools/setup.sh does)")
    return node


def run(steps, args=(), timeout=600, heap=None):
    """Run code steps in one VM; return the CompletedProcess (text mode).

    steps: list of Python source strings, each its own runPython call, so the
    VM's garbage collector runs between them.
    """
    node = check()
    cmd = [node, RUNNER]
    if heap:
        cmd += ["--heap", str(heap)]
    for a in args:
        cmd += ["--arg", str(a)]
    for s in steps:
        cmd += ["--code", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
