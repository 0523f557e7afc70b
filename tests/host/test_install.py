"""`pip install .` into a fresh virtualenv, outside the checkout, gives a
working `upsycle`: the board code and the virtual board ship in the package,
the MicroPython VM comes from npm on first use (into the user's cache),
a virtual board starts and is flashed, the demo runs, and a command whose
optional dependencies are missing says which extra to install.

Packages come from the configured index (pip's own configuration); the VM
from the npm registry, pinned by the package's lock file.
"""
import json
import os
import shutil
import subprocess
import sys

from upsycle import processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What a user's copy of the sources holds: not our virtualenv, npm modules or caches.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "node_modules", ".stamps", "__pycache__", ".hypothesis",
                                     ".pytest_cache", "build", "*.egg-info", "out")
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 120     # the first start installs the VM from npm
DEMO_TIMEOUT_S = 400


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), UPSYCLE_HOME=str(tmp_path / "upsycle-home"))
    return env


def _board_url(proc):
    lines = []
    for line in proc.stdout:
        if line.startswith("socket://"):
            return line.strip()
        lines.append(line)
    raise AssertionError("the virtual board did not start:\n" + "".join(lines[-30:]))


def test_pip_install_outside_the_checkout_gives_a_working_upsycle(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = _env(tmp_path)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    shutil.rmtree(src)                       # nothing of the sources is left to lean on
    upsycle = str(venv / "bin" / "upsycle")

    def run(*args, timeout=300):
        return subprocess.run([upsycle] + list(args), cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=timeout)

    r = run("board", "list")
    assert r.returncode == 0 and "pico_w" in r.stdout and "virtual" in r.stdout, r.stderr
    r = run("sim", "cyclon")                 # no `sim` extra: a clear message, not a traceback
    assert r.returncode == 2 and "pip install 'upsycle[sim]'" in r.stderr, r.stderr

    board = subprocess.Popen([upsycle, "board", "virtual", "--port", "0", "--fs", str(tmp_path / "flash")],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        url = _board_url(board)
        assert os.path.isdir(tmp_path / "cache" / "upsycle"), "the VM was not installed into the user's cache"
        r = run("flash", "--board", "virtual", "--port", url, "--proxy", "127.0.0.1:9",
                "--build-dir", str(tmp_path / "build"), timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "node up" in r.stdout + r.stderr, r.stdout[-3000:]
    finally:
        processes.stop(board)
        board.stdout.close()
    with open(tmp_path / "flash" / "config.json") as f:
        assert json.load(f)["board"] == "virtual"

    r = run("demo", "--readings", "2", "--offline", "3", timeout=DEMO_TIMEOUT_S)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
