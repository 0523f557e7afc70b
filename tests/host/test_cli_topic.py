"""`upsycle topic` end to end on one host, three homes (admin, reader+writer,
reader): create -> invite -> join -> seal -> open -> remove -> re-key."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host") + os.pathsep + ROOT)


def run(capsys, *argv):
    # A separate process, as a user runs it: importing the CLI in-process
    # would register every command's message types in this test process.
    p = subprocess.run([sys.executable, "-m", "upsycle"] + list(argv), env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_create_invite_join_publish_remove(tmp_path, capsys):
    admin, alice, bob = (str(tmp_path / n) for n in ("admin", "alice", "bob"))
    assert run(capsys, "topic", "--home", admin, "create", "garden")[0] == 0
    png, svg = str(tmp_path / "q.png"), str(tmp_path / "q.svg")
    code, out, _ = run(capsys, "topic", "--home", admin, "invite", "garden", "--read", "--write", "--png", png, "--svg", svg)
    assert code == 0
    url_rw = out.strip().splitlines()[-1]
    assert url_rw.startswith("upsycle://join?v=1&i=")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and b"<svg" in open(svg, "rb").read()
    url_r = run(capsys, "topic", "--home", admin, "invite", "garden", "--read", "--no-qr")[1].strip()
    assert run(capsys, "topic", "--home", alice, "join", url_rw)[0] == 0
    code, out, _ = run(capsys, "topic", "--home", bob, "join", url_r)
    assert code == 0 and "as read," in out
    bob_key = re.search(r"member key ([0-9a-f]{64})", out).group(1)

    pub = str(tmp_path / "pub1")
    assert run(capsys, "topic", "--home", alice, "seal", "garden", "soil moisture 31%", "--out", pub)[0] == 0
    assert b"soil moisture" not in open(pub, "rb").read()
    for home in (admin, bob):
        code, out, _ = run(capsys, "topic", "--home", home, "open", "garden", pub)
        assert code == 0 and "soil moisture 31%" in out
    code, _, err = run(capsys, "topic", "--home", bob, "open", "garden", pub)
    assert code == 1 and "group_replay" in err
    # bob cannot publish: read-only
    code, _, err = run(capsys, "topic", "--home", bob, "seal", "garden", "x", "--out", str(tmp_path / "no"))
    assert code == 1 and "write" in err

    code, out, _ = run(capsys, "topic", "--home", admin, "remove", "garden", bob_key[:10])
    assert code == 0 and "epoch 1" in out
    rekey = re.search(r": (\S+rekey-1\.cbor)", out).group(1)
    assert run(capsys, "topic", "--home", alice, "open", "garden", rekey)[1].startswith("re-keyed")
    code, _, err = run(capsys, "topic", "--home", bob, "open", "garden", rekey)
    assert code == 1 and "group_removed" in err
    pub2 = str(tmp_path / "pub2")
    run(capsys, "topic", "--home", alice, "seal", "garden", "after bob left", "--out", pub2)
    code, _, err = run(capsys, "topic", "--home", bob, "open", "garden", pub2)
    assert code == 1 and "group_unknown_epoch" in err
    assert "after bob left" in run(capsys, "topic", "--home", admin, "open", "garden", pub2)[1]
    # secrets are stored private
    for home in (admin, alice, bob):
        for name in os.listdir(os.path.join(home, "topics")):
            assert os.stat(os.path.join(home, "topics", name)).st_mode & 0o077 == 0


def test_join_rejects_garbage_url(tmp_path, capsys):
    code, _, err = run(capsys, "topic", "--home", str(tmp_path), "join", "upsycle://join?v=1&i=AAAA")
    assert code == 1 and "not a valid invite" in err
    code, _, err = run(capsys, "topic", "--home", str(tmp_path), "join", "https://example.com")
    assert code == 1


def test_commands_naming_an_unknown_topic_say_so(tmp_path, capsys):
    home = str(tmp_path)
    msg = tmp_path / "m.bin"
    msg.write_bytes(b"x")
    for argv in (["invite", "nosuch", "--no-qr"], ["remove", "nosuch", "ab"], ["members", "nosuch"],
                 ["seal", "nosuch", "hello", "--out", str(tmp_path / "o.bin")], ["open", "nosuch", str(msg)]):
        code, _, err = run(capsys, "topic", "--home", home, *argv)
        assert code == 1 and "upsycle topic: no " in err and "'nosuch'" in err, (argv, code, err)
