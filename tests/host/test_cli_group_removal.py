"""Removing a member, as users do it, through a real proxy process and the
CLI: `topic remove --proxy` publishes the re-key on the topic; writers
(read+write and write-only) apply it before they publish again; readers
read what comes after; the removed member reads none of it and its posts are
refused; a reader that got messages before their re-key keeps them and
prints them once the re-key arrives (also when the proxy's history lost it
and the admin sends it again); a member key joined twice or on two devices
publishes without its messages being taken for replays; expired invites and
capabilities give clear errors."""
import asyncio
import os
import re
import shutil
import time

from proxy_rig import cli, free_port, start_proxy

from upsycle.client import Client


def _ok(p):
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert b"Traceback" not in p.stderr, p.stderr
    return p.stdout.decode()


def _topic(tmp_path, *specs):
    """An admin home and one joined home per (name, flags) spec."""
    admin = str(tmp_path / "admin")
    _ok(cli("topic", "--home", admin, "create", "garden"))
    homes, keys = {}, {}
    for name, flags in specs:
        url = _ok(cli("topic", "--home", admin, "invite", "garden", "--no-qr", *flags)).strip()
        homes[name] = str(tmp_path / name)
        out = _ok(cli("topic", "--home", homes[name], "join", url))
        keys[name] = re.search(r"member key ([0-9a-f]{64})", out).group(1)
    return admin, homes, keys


def _stop(proc):
    proc.terminate()
    proc.wait(timeout=20)


async def _publish_raw(port, tid, payload, home):
    async with Client("127.0.0.1", port, home=home) as c:
        await c.publish(tid, payload)


def test_removal_reaches_every_member_through_a_proxy(tmp_path):
    admin, h, k = _topic(tmp_path, ("alice", ["--read", "--write"]), ("bob", ["--read", "--write"]),
                         ("carol", ["--read"]), ("walt", ["--write"]))
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port)
    hp = "127.0.0.1:%d" % port
    try:
        _ok(cli("pub", "garden", "before-removal", "--proxy", hp, "--home", h["alice"]))
        for name in ("carol", "bob"):
            assert _ok(cli("sub", "garden", "--proxy", hp, "--home", h[name], "--count", "1",
                           "--timeout", "20")).splitlines() == ["before-removal"]
        bob_stale = str(tmp_path / "bob-stale")     # bob's keys as they were before the removal
        shutil.copytree(h["bob"], bob_stale)

        out = _ok(cli("topic", "--home", admin, "remove", "garden", k["bob"][:12], "--proxy", hp))
        assert "re-key published on the topic" in out, out

        # writers catch up on the re-key before they seal: the new epoch
        _ok(cli("pub", "garden", "walt-after", "--proxy", hp, "--home", h["walt"]))
        _ok(cli("pub", "garden", "alice-after", "--proxy", hp, "--home", h["alice"]))
        # the removed member's own pub learns it was removed and says so
        p = cli("pub", "garden", "bob-after", "--proxy", hp, "--home", h["bob"])
        assert p.returncode == 1 and b"removed" in p.stderr and b"Traceback" not in p.stderr, p.stderr
        # a removed member posting anyway (sealed with the old keys, sent raw) is refused by members
        forged = str(tmp_path / "forged")
        _ok(cli("topic", "--home", bob_stale, "seal", "garden", "bob-forged", "--out", forged))
        tid = re.search(r"^([0-9a-f]{32})", _ok(cli("topic", "--home", admin, "list"))).group(1)
        asyncio.run(_publish_raw(port, bytes.fromhex(tid), open(forged, "rb").read(), str(tmp_path / "raw")))

        s = cli("sub", "garden", "--proxy", hp, "--home", h["carol"], "--timeout", "8")
        assert _ok(s).splitlines() == ["walt-after", "alice-after"], (s.stdout, s.stderr)
        assert b"re-keyed; now at epoch 1" in s.stderr and b"group_member_revoked" in s.stderr, s.stderr
        s = cli("sub", "garden", "--proxy", hp, "--home", h["alice"], "--timeout", "8")
        assert _ok(s).splitlines() == ["before-removal", "walt-after", "alice-after"], (s.stdout, s.stderr)
        # the removed member reads nothing published after the removal
        s = cli("sub", "garden", "--proxy", hp, "--home", h["bob"], "--timeout", "8")
        assert _ok(s).splitlines() == ["bob-forged"], s.stdout     # only what it wrote itself
        assert b"group_removed" in s.stderr, s.stderr
        s = cli("sub", "garden", "--proxy", hp, "--home", bob_stale, "--timeout", "8")
        assert b"after" not in s.stdout, s.stdout
        # the admin reads both, refuses the forged post
        s = cli("sub", "garden", "--proxy", hp, "--home", admin, "--timeout", "8")
        assert _ok(s).splitlines() == ["before-removal", "walt-after", "alice-after"], (s.stdout, s.stderr)
    finally:
        _stop(proxy)


def test_sub_keeps_messages_until_their_rekey_arrives_even_when_the_proxy_lost_it(tmp_path):
    admin, h, k = _topic(tmp_path, ("alice", ["--read", "--write"]), ("bob", ["--read"]),
                         ("carol", ["--read"]))
    conf = tmp_path / "proxy.toml"
    conf.write_text("[retention]\nmax_count = 2\n")
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port, "--config", str(conf))
    hp = "127.0.0.1:%d" % port
    try:
        _ok(cli("topic", "--home", admin, "remove", "garden", k["bob"][:12], "--proxy", hp))
        _ok(cli("pub", "garden", "one", "--proxy", hp, "--home", h["alice"]))  # alice catches up: epoch 1
        _ok(cli("pub", "garden", "two", "--proxy", hp, "--home", h["alice"]))
        # the proxy keeps 2 messages: the re-key is gone; carol gets epoch-1 messages she cannot open yet
        s = cli("sub", "garden", "--proxy", hp, "--home", h["carol"], "--timeout", "6")
        assert _ok(s) == "" and b"kept a message until the re-key" in s.stderr, s.stderr
        assert b"dropped" not in s.stderr, s.stderr
        # the admin sends its kept re-keys again: carol applies it and prints what she kept
        _ok(cli("topic", "--home", admin, "resend", "garden", "--proxy", hp))
        s = cli("sub", "garden", "--proxy", hp, "--home", h["carol"], "--count", "2", "--timeout", "20")
        assert _ok(s).splitlines() == ["one", "two"], (s.stdout, s.stderr)
        # taken once: a later run prints them no more
        s = cli("sub", "garden", "--proxy", hp, "--home", h["carol"], "--timeout", "4")
        assert _ok(s) == "", s.stdout
    finally:
        _stop(proxy)


def test_remove_without_proxy_is_published_by_the_admins_next_pub(tmp_path):
    admin, h, k = _topic(tmp_path, ("alice", ["--read"]), ("bob", ["--read"]))
    out = _ok(cli("topic", "--home", admin, "remove", "garden", k["bob"][:12]))
    assert "removed" in out
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port)
    hp = "127.0.0.1:%d" % port
    try:
        _ok(cli("pub", "garden", "admin-after", "--proxy", hp, "--home", admin))
        s = cli("sub", "garden", "--proxy", hp, "--home", h["alice"], "--count", "1", "--timeout", "20")
        assert _ok(s).splitlines() == ["admin-after"] and b"epoch 1" in s.stderr, s.stderr
        s = cli("sub", "garden", "--proxy", hp, "--home", h["bob"], "--timeout", "5")
        assert _ok(s) == "", s.stdout
        # published once: the admin's next run does not send it again
        _ok(cli("pub", "garden", "admin-again", "--proxy", hp, "--home", admin))
        s = cli("sub", "garden", "--proxy", hp, "--home", h["alice"], "--count", "1", "--timeout", "20")
        assert _ok(s).splitlines() == ["admin-again"] and b"re-keyed" not in s.stderr, s.stderr
    finally:
        _stop(proxy)


def test_a_member_joined_twice_and_on_a_second_device_is_read_every_time(tmp_path):
    admin = str(tmp_path / "admin")
    _ok(cli("topic", "--home", admin, "create", "garden"))
    url = _ok(cli("topic", "--home", admin, "invite", "garden", "--read", "--write", "--no-qr")).strip()
    laptop, pi, reader = (str(tmp_path / n) for n in ("laptop", "pi", "reader"))
    _ok(cli("topic", "--home", laptop, "join", url))
    _ok(cli("topic", "--home", reader, "join",
            _ok(cli("topic", "--home", admin, "invite", "garden", "--read", "--no-qr")).strip()))
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port)
    hp = "127.0.0.1:%d" % port
    try:
        _ok(cli("pub", "garden", "laptop-1", "--proxy", hp, "--home", laptop))
        _ok(cli("topic", "--home", pi, "join", url))          # the same invite on a second device
        _ok(cli("pub", "garden", "pi-1", "--proxy", hp, "--home", pi))
        _ok(cli("pub", "garden", "laptop-2", "--proxy", hp, "--home", laptop))
        s = cli("sub", "garden", "--proxy", hp, "--home", reader, "--count", "3", "--timeout", "20")
        assert _ok(s).splitlines() == ["laptop-1", "pi-1", "laptop-2"], (s.stdout, s.stderr)
        # joined again in the same home: kept as it is (not reset to seq 1 of the same generation)
        assert "already joined" in _ok(cli("topic", "--home", laptop, "join", url))
        _ok(cli("pub", "garden", "laptop-3", "--proxy", hp, "--home", laptop))
        s = cli("sub", "garden", "--proxy", hp, "--home", reader, "--count", "1", "--timeout", "20")
        assert _ok(s).splitlines() == ["laptop-3"], (s.stdout, s.stderr)
    finally:
        _stop(proxy)


def test_expired_invite_and_capability_give_clear_errors(tmp_path):
    admin = str(tmp_path / "admin")
    _ok(cli("topic", "--home", admin, "create", "garden"))
    t0 = time.time()
    url = _ok(cli("topic", "--home", admin, "invite", "garden", "--read", "--write", "--expires", "8",
                  "--no-qr")).strip()
    early = str(tmp_path / "early")
    _ok(cli("topic", "--home", early, "join", url))
    time.sleep(max(0, t0 + 9.5 - time.time()))
    p = cli("topic", "--home", str(tmp_path / "late"), "join", url)
    assert p.returncode == 1 and b"expired" in p.stderr and b"Traceback" not in p.stderr, p.stderr
    assert not os.path.exists(str(tmp_path / "late" / "topics"))
    # pub with the expired capability: a clear error before anything is sent (no proxy needed)
    p = cli("pub", "garden", "too late", "--proxy", "127.0.0.1:%d" % free_port(), "--home", early,
            "--timeout", "3")
    assert p.returncode == 1 and b"expired" in p.stderr and b"Traceback" not in p.stderr, p.stderr


def test_operator_mistakes_and_a_tampered_invite(tmp_path):
    from shared_protocol.wire import cbor
    from shared_protocol.groups.invite import URL_PREFIX, _b64url, _unb64url
    admin, h, k = _topic(tmp_path, ("alice", ["--read"]), ("bob", ["--read"]))
    # the proxy is down when the admin removes bob: clear error, the re-key stays in the outbox
    dead = "127.0.0.1:%d" % free_port()
    p = cli("topic", "--home", admin, "remove", "garden", k["bob"][:12], "--proxy", dead, "--timeout", "2")
    assert p.returncode == 1 and b"stays in this home's outbox" in p.stderr and b"Traceback" not in p.stderr, p.stderr
    # removing again: bob is no longer a member
    p = cli("topic", "--home", admin, "remove", "garden", k["bob"][:12])
    assert p.returncode == 1 and b"matches 0 members" in p.stderr, p.stderr
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port)
    hp = "127.0.0.1:%d" % port
    try:
        # the admin's next sub publishes it; alice applies it
        _ok(cli("sub", "garden", "--proxy", hp, "--home", admin, "--timeout", "3"))
        s = cli("sub", "garden", "--proxy", hp, "--home", h["alice"], "--timeout", "5")
        assert _ok(s) == "" and b"re-keyed; now at epoch 1" in s.stderr, s.stderr
    finally:
        _stop(proxy)
    # an invite whose capability was edited (a longer expiry, a write right added) is refused at join
    url = _ok(cli("topic", "--home", admin, "invite", "garden", "--write", "--expires", "60", "--no-qr")).strip()
    inv = cbor.decode(_unb64url(url[len(URL_PREFIX):]))
    inv[6][3] += 10 ** 6
    p = cli("topic", "--home", str(tmp_path / "mallory"), "join", URL_PREFIX + _b64url(cbor.encode(inv)))
    assert p.returncode == 1 and b"not signed by the topic admin" in p.stderr and b"Traceback" not in p.stderr, \
        p.stderr
