"""The session-end check of tests/conftest.py: a run in which a test leaves a
process behind fails, names the process and ends it; a clean run passes."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LEAKY = '''
import subprocess, sys

def test_starts_a_child_and_forgets_it():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open("child.pid", "w").write(str(p.pid))
'''

CLEAN = '''
import subprocess, sys

def test_starts_a_child_and_stops_it():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    p.kill()
    p.wait()
'''


def _run(tmp_path, body):
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_one.py").write_text(body)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_a_process_left_running_fails_the_run_and_is_ended(tmp_path):
    r = _run(tmp_path, LEAKY)
    pid = int((tmp_path / "child.pid").read_text())
    assert r.returncode != 0, r.stdout
    assert "still running at the end of the session" in r.stdout and str(pid) in r.stdout, r.stdout
    assert not _alive(pid)


def test_a_clean_run_passes(tmp_path):
    r = _run(tmp_path, CLEAN)
    assert r.returncode == 0, r.stdout + r.stderr
