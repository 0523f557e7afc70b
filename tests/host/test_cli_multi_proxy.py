"""`upsycle pub` / `upsycle sub` with several proxies of a federation
(repeated --proxy, docs/federation.md): the proxy both use is SIGKILLed
mid-stream; the publisher's every message is acknowledged, the subscriber
prints each exactly once, and a later run that starts at the restarted
proxy prints nothing it already printed."""
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from proxy_rig import ENV, ROOT, cli, free_port, start_proxy, stop
from upsycle import identity, processes, topics

TOPIC = "fed/cli"
N = 3000


def _key(data):
    return identity.public_key(identity.proxy_key(data)).hex()


def _stored(data, tid):
    try:
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data, "proxy.sqlite3"), uri=True, timeout=1)
        try:
            return db.execute("SELECT count(*) FROM messages WHERE topic=?", (tid,)).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _run(*args, stdin=subprocess.DEVNULL):
    return subprocess.Popen([sys.executable, "-m", "upsycle"] + list(args), env=ENV, cwd=ROOT,
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("mode", ["failover", "all"])
def test_pub_and_sub_with_two_proxies_survive_the_one_in_use_dying(tmp_path, mode):
    pa, pb = free_port(), free_port()
    da, db = str(tmp_path / "a"), str(tmp_path / "b")
    fed = ["--overlay-period", "0.5", "--catchup-period", "1"]
    a = start_proxy(da, pa, "--peer", "127.0.0.1:%d" % pb, *fed)
    b = start_proxy(db, pb, "--peer", "127.0.0.1:%d" % pa, *fed)
    tid = topics.resolve(TOPIC)
    # keys pinned per proxy (HOST:PORT@KEY), A first: both start there
    proxies = ["--proxy", "127.0.0.1:%d@%s" % (pa, _key(da)), "--proxy", "127.0.0.1:%d@%s" % (pb, _key(db))]
    extra = ["--all"] if mode == "all" else []
    home_sub, home_pub = str(tmp_path / "sub"), str(tmp_path / "pub")
    msgs = ["m%04d" % k for k in range(N)]
    procs = []
    try:
        sub = _run("sub", TOPIC, *proxies, *extra, "--home", home_sub, "--count", str(N), "--timeout", "120")
        procs.append(sub)
        lines_file = tmp_path / "msgs"
        lines_file.write_text("".join(m + "\n" for m in msgs))
        with open(lines_file, "rb") as f:
            pub = _run("pub", TOPIC, "-", *proxies, *extra, "--home", home_pub, "--timeout", "120", stdin=f)
        procs.append(pub)
        end = time.monotonic() + 60
        while _stored(da, tid) < N // 10 and time.monotonic() < end:
            time.sleep(0.02)
        stored_at_kill = _stored(da, tid)
        processes.kill(a)                  # the proxy in use, mid-stream
        assert 0 < stored_at_kill < N, "the kill did not land mid-stream (%d stored)" % stored_at_kill
        pub_err = pub.communicate(timeout=150)[1]
        assert pub.returncode == 0, pub_err.decode()
        # A back: what it acknowledged just before it died reaches B only now
        # (catch-up); the subscriber, at B, gets it from there.
        a = start_proxy(da, pa, "--peer", "127.0.0.1:%d" % pb, *fed)
        out, err = sub.communicate(timeout=150)
        assert sub.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert len(lines) == N, err.decode()[-2000:]
        assert sorted(lines) == msgs     # every acknowledged message, none twice
        # Each proxy ends with each message once, whichever way it came (the
        # publisher, the federation: the subscriber printed some from A that
        # reach B only by catch-up)
        end = time.monotonic() + 60
        while (_stored(da, tid), _stored(db, tid)) != (N, N) and time.monotonic() < end:
            time.sleep(0.2)
        assert (_stored(da, tid), _stored(db, tid)) == (N, N)

        # A sub run that starts at A (its cursor there is where the kill left
        # it) prints nothing the last run printed.
        r = cli("pub", TOPIC, "last", *proxies, *extra, "--home", home_pub)
        assert r.returncode == 0, r.stderr.decode()
        again = cli("sub", TOPIC, *proxies, *extra, "--home", home_sub, "--count", "1", "--timeout", "30")
        assert again.returncode == 0, again.stderr.decode()
        assert again.stdout.decode().splitlines() == ["last"]
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
        for p in (a, b):
            if p.poll() is None:
                stop(p)


def test_bad_proxy_lists_are_usage_errors(tmp_path):
    r = cli("pub", TOPIC, "x", "--proxy", "127.0.0.1:1@abcd", "--home", str(tmp_path))
    assert r.returncode == 2 and b"64 hex digits" in r.stderr
    r = cli("sub", TOPIC, "--proxy", "127.0.0.1:1", "--proxy", "127.0.0.1:2", "--proxy-key", "00" * 32,
            "--home", str(tmp_path))
    assert r.returncode == 2 and b"--proxy HOST:PORT@KEY" in r.stderr
    r = cli("pub", TOPIC, "x", *sum((["--proxy", "127.0.0.1:%d" % (k + 1)] for k in range(5)), []),
            "--home", str(tmp_path))
    assert r.returncode == 2 and b"at most 4" in r.stderr
    r = cli("pub", TOPIC, "x", "--proxy", "127.0.0.1:notaport", "--home", str(tmp_path))
    assert r.returncode == 2 and b"bad port" in r.stderr


def test_a_private_topic_through_all_of_two_proxies(tmp_path):
    """Sealed once, the same bytes at both proxies under one id; the member
    at both proxies opens each message once (dedup before the replay
    window), and a member that joins later and subscribes at both too."""
    admin, member = str(tmp_path / "admin"), str(tmp_path / "member")
    assert cli("topic", "--home", admin, "create", "plot7").returncode == 0
    url = cli("topic", "--home", admin, "invite", "plot7", "--read", "--write", "--no-qr").stdout.decode().strip()
    assert cli("topic", "--home", member, "join", url).returncode == 0
    pa, pb = free_port(), free_port()
    da, db = str(tmp_path / "a"), str(tmp_path / "b")
    fed = ["--overlay-period", "0.5", "--catchup-period", "1"]
    a = start_proxy(da, pa, "--peer", "127.0.0.1:%d" % pb, *fed)
    b = start_proxy(db, pb, "--peer", "127.0.0.1:%d" % pa, *fed)
    both = ["--all", "--proxy", "127.0.0.1:%d" % pa, "--proxy", "127.0.0.1:%d" % pb]
    try:
        p = cli("pub", "plot7", "one", "two", "three", *both, "--home", admin)
        assert p.returncode == 0, p.stderr
        s = cli("sub", "plot7", *both, "--home", member, "--count", "3", "--timeout", "30")
        assert s.returncode == 0, s.stderr
        assert s.stdout.splitlines() == [b"one", b"two", b"three"]
        assert b"failed the group check" not in s.stderr, s.stderr
        # the same sealed bytes at both proxies, one row each
        rows = []
        for d in (da, db):
            con = sqlite3.connect("file:%s?mode=ro" % os.path.join(d, "proxy.sqlite3"), uri=True)
            rows.append(sorted((bytes(m), bytes(pl)) for m, pl in con.execute(
                "SELECT msg_id, payload FROM messages")))
            con.close()
        assert len(rows[0]) == 3 and rows[0] == rows[1]
    finally:
        stop(a)
        stop(b)
