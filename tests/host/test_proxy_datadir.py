"""The proxy's data directory as a careless operator treats it: two proxies
on one directory, a truncated or damaged database, a disk quota, file modes
(host/upsycle/proxy/datadir.py, store.py)."""
import asyncio
import hashlib
import os
import stat
import subprocess

import pytest

from proxy_rig import cli, free_port, start_proxy
from upsycle.client import Client, PublishRejected
from upsycle.identity import node_key
from upsycle.proxy import datadir
from upsycle.proxy.config import Config
from upsycle.proxy.server import Proxy
from upsycle.proxy.store import DB_NAME, StorageError, Store


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


def config(data, **limits):
    c = Config()
    c.data = str(data)
    c.tcp_port = 0
    c.udp_port = 0
    c.limits.update(limits)
    return c


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def ident(name):
    return hashlib.sha256(b"datadir-test:" + name).digest()


async def publish_some(data, n, topic=b"t"):
    p = Proxy(config(data))
    await p.start()
    try:
        host, port = p.addresses["tcp"]
        async with Client(host, port, identity=ident(b"pub")) as c:
            for i in range(n):
                await c.publish(topic, b"message %d " % i + b"x" * 200)
    finally:
        await p.stop()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_second_proxy_on_the_same_data_directory_exits_3(tmp_path):
    data = str(tmp_path / "d")
    first = start_proxy(data, free_port(), stderr=subprocess.DEVNULL)
    try:
        r = cli("proxy", "--data", data, "--listen", "127.0.0.1:%d" % free_port(), timeout=30)
        assert r.returncode == 3, r.stderr
        assert b"in use by another proxy (pid %d)" % first.pid in r.stderr
        assert b"Traceback" not in r.stderr
        # In one process too (a library user starting two Proxy objects).
        with pytest.raises(StorageError) as ei:
            run(Proxy(config(data)).start())
        assert ei.value.code == "storage_locked"
    finally:
        first.terminate()
        first.wait(10)
    # The lock goes with the process: SIGKILL leaves none behind.
    port = free_port()
    second = start_proxy(data, port, stderr=subprocess.DEVNULL)
    second.kill()
    second.wait(10)
    third = start_proxy(data, port, stderr=subprocess.DEVNULL)
    third.terminate()
    assert third.wait(10) == 0


def _start_fails(data):
    r = cli("proxy", "--data", str(data), "--listen", "127.0.0.1:%d" % free_port(), timeout=30)
    assert b"Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stderr.decode()


def test_truncated_database_is_refused_not_started_empty(tmp_path):
    data = tmp_path / "d"
    run(publish_some(data, 5))
    db = data / DB_NAME
    assert db.stat().st_size > 0
    with open(db, "r+b") as f:
        f.truncate(0)
    rc, err = _start_fails(data)
    assert rc == 3, err
    assert "empty (0 bytes)" in err and "restore" in err
    # A deleted database likewise, and the file is not re-created empty.
    os.remove(db)
    rc, err = _start_fails(data)
    assert rc == 3 and "missing" in err, err
    assert not db.exists()


def test_damaged_pages_exit_3_with_a_clear_message(tmp_path):
    data = tmp_path / "d"
    run(publish_some(data, 200))
    db = data / DB_NAME
    page = 4096
    n = db.stat().st_size // page
    assert n > 8
    with open(db, "r+b") as f:
        for k in range(3, n, 3):      # every third page's b-tree header
            f.seek(k * page)
            f.write(b"\xa5" * 12)
    rc, err = _start_fails(data)
    assert rc == 3, err
    assert "damaged" in err and str(db) in err


def test_damaged_header_and_foreign_database_are_refused(tmp_path):
    data = tmp_path / "d"
    run(publish_some(data, 3))
    db = data / DB_NAME
    good = db.read_bytes()
    db.write_bytes(b"\0" * 16 + good[16:])
    rc, err = _start_fails(data)
    assert rc == 3 and "header" in err, err
    # Another proxy's database put in its place.
    other = tmp_path / "other"
    run(publish_some(other, 1))
    db.write_bytes((other / DB_NAME).read_bytes())
    rc, err = _start_fails(data)
    assert rc == 3 and "belongs to proxy" in err, err
    # The right one back: it starts and has everything.
    db.write_bytes(good)
    assert datadir.read_marker(str(data)) is not None
    port = free_port()
    proc = start_proxy(str(data), port, stderr=subprocess.DEVNULL)
    try:
        r = cli("proxy", "status", "--proxy", "127.0.0.1:%d" % port, "--json")
        assert b'"stored_messages": 3' in r.stdout
    finally:
        proc.terminate()
        proc.wait(10)


def test_quota_counts_the_wal_and_what_is_on_disk(tmp_path):
    quota = 300 * 1024
    data = tmp_path / "d"

    def on_disk():
        return sum(os.path.getsize(str(data / (DB_NAME + s))) for s in ("", "-wal", "-shm")
                   if os.path.exists(str(data / (DB_NAME + s))))

    async def main():
        c = config(data, max_db_bytes=quota)
        c.retention.max_count = 0
        c.retention.max_bytes = 0
        p = Proxy(c)
        await p.start()
        peak = 0
        acked = rejected = 0
        try:
            host, port = p.addresses["tcp"]
            async with Client(host, port, identity=ident(b"q")) as cl:
                i = 0
                while rejected < 20 and i < 3000:
                    futs = [asyncio.ensure_future(cl.publish(b"q", b"%06d" % (i + k) + b"y" * 1000))
                            for k in range(16)]
                    i += 16
                    for f in futs:
                        try:
                            await f
                            acked += 1
                        except PublishRejected as e:
                            assert e.code == "storage_full"
                            rejected += 1
                    peak = max(peak, on_disk())
        finally:
            await p.stop()
        return peak, acked, rejected

    peak, acked, rejected = run(main())
    print("quota %d bytes: %d acknowledged, peak on disk %d bytes" % (quota, acked, peak))
    assert rejected >= 20 and acked >= 16
    assert peak <= quota, "database + WAL + SHM reached %d bytes over a %d quota" % (peak, quota)


def test_data_directory_and_home_are_private(tmp_path):
    data = tmp_path / "d"
    data.mkdir(mode=0o755)
    os.chmod(str(data), 0o755)
    run(publish_some(data, 2))
    assert mode(str(data)) == 0o700
    names = sorted(os.listdir(str(data)))
    assert DB_NAME in names and "proxy_key" in names and "store_marker" in names
    for name in names:
        assert mode(str(data / name)) == 0o600, name
    # While it runs, the WAL and SHM are private too; an old 0644 database is tightened.
    os.chmod(str(data / DB_NAME), 0o644)

    async def running():
        p = Proxy(config(data))
        await p.start()
        try:
            host, port = p.addresses["tcp"]
            async with Client(host, port, identity=ident(b"m")) as c:
                await c.publish(b"t", b"x")
            return dict((n, mode(str(data / n))) for n in os.listdir(str(data)))
        finally:
            await p.stop()

    modes = run(running())
    assert DB_NAME + "-wal" in modes and DB_NAME + "-shm" in modes
    assert set(modes.values()) == {0o600}, modes
    # The node's home: 0700, its files 0600.
    home = tmp_path / "home"
    assert mode(str(home)) == 0o700
    for name in os.listdir(str(home)):
        assert mode(str(home / name)) == 0o600, name
    other = tmp_path / "home2"
    other.mkdir(mode=0o755)
    os.chmod(str(other), 0o755)
    node_key(str(other))
    assert mode(str(other)) == 0o700 and mode(str(other / "node_key")) == 0o600


def test_a_clean_close_lets_the_next_start_skip_the_page_scan_and_nothing_else(tmp_path):
    """After a clean stop the database file is exactly as the proxy left it
    (store_clean records it): the next start need not read every page for
    damage. A write by anything else, or a crash, makes it scan again."""
    data = tmp_path / "d"
    run(publish_some(data, 200))
    assert (data / datadir.CLEAN_FILE).exists()
    st = Store(str(data))
    st.open()
    try:
        assert not st.checked
        assert not (data / datadir.CLEAN_FILE).exists()   # gone while it runs: a crash leaves none
        assert st.stored_totals()[0] == 200
    finally:
        st.close()
    # Damaged in place, same size: the stamp no longer matches, the scan runs and refuses.
    db = data / DB_NAME
    size = db.stat().st_size
    with open(db, "r+b") as f:
        for k in range(3, size // 4096, 3):
            f.seek(k * 4096)
            f.write(b"\xa5" * 12)
    assert db.stat().st_size == size and (data / datadir.CLEAN_FILE).exists()
    with pytest.raises(StorageError) as ei:
        Store(str(data)).open()
    assert ei.value.code == "storage_damaged"
    assert not (data / datadir.CLEAN_FILE).exists()

    # A proxy killed with SIGKILL leaves no stamp: the next start scans.
    other = tmp_path / "e"
    run(publish_some(other, 5))
    port = free_port()
    proc = start_proxy(str(other), port, stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait(10)
    assert not (other / datadir.CLEAN_FILE).exists()
    st = Store(str(other))
    st.open()
    try:
        assert st.checked and st.stored_totals()[0] == 5
    finally:
        st.close()


def test_a_port_in_use_or_a_bad_key_file_exits_3_with_one_clear_line(tmp_path):
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        r = cli("proxy", "--data", str(tmp_path / "a"), "--listen", "127.0.0.1:%d" % port, timeout=30)
    finally:
        busy.close()
    assert r.returncode == 3, r.stderr
    assert b"upsycle proxy: cannot listen on" in r.stderr
    assert b"Traceback" not in r.stderr
    assert r.stderr.count(b"event=start_failed code=listen") == 1
    # A damaged proxy key in the data directory: the same exit, its own line.
    first = start_proxy(str(tmp_path / "b"), free_port(), stderr=subprocess.DEVNULL)
    first.terminate()
    assert first.wait(10) == 0
    keys = [f for f in os.listdir(tmp_path / "b") if "key" in f]
    assert keys, os.listdir(tmp_path / "b")
    for f in keys:
        with open(tmp_path / "b" / f, "wb") as fh:
            fh.write(b"not a key")
    r = cli("proxy", "--data", str(tmp_path / "b"), "--listen", "127.0.0.1:%d" % free_port(), timeout=30)
    assert r.returncode == 3, r.stderr
    assert b"upsycle proxy: cannot load the proxy key" in r.stderr
    assert b"Traceback" not in r.stderr
