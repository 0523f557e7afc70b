"""`upsycle pub`/`upsycle sub` on a private topic, as a user types them:
create -> invite -> join -> pub through a running proxy -> sub prints the
plaintext; the proxy's files hold only ciphertext."""
import glob
import os
import re

from proxy_rig import cli, free_port, start_proxy, stop

READING = b"soil-moisture=31.7%-plot-7"


def test_private_topic_with_pub_and_sub_commands(tmp_path):
    admin, member = str(tmp_path / "admin"), str(tmp_path / "member")
    assert cli("topic", "--home", admin, "create", "plot7").returncode == 0
    inv = cli("topic", "--home", admin, "invite", "plot7", "--read", "--write", "--no-qr")
    assert inv.returncode == 0, inv.stderr
    url = inv.stdout.decode().strip()
    assert url.startswith("upsycle://")
    j = cli("topic", "--home", member, "join", url)
    assert j.returncode == 0, j.stderr

    port = free_port()
    data = str(tmp_path / "proxy")
    proxy = start_proxy(data, port)
    try:
        hp = "127.0.0.1:%d" % port
        p = cli("pub", "plot7", READING.decode(), "second", "--proxy", hp, "--home", admin)
        assert p.returncode == 0, p.stderr
        s = cli("sub", "plot7", "--proxy", hp, "--home", member,
                "--count", "2", "--timeout", "20")
        assert s.returncode == 0, s.stderr
        assert s.stdout.splitlines() == [READING, b"second"]
        # a node without the keys subscribes to the same id and gets only ciphertext
        tid = re.search(rb"[0-9a-f]{32}", cli("topic", "--home", admin, "list").stdout).group(0).decode()
        raw = cli("sub", tid, "--proxy", hp, "--home", str(tmp_path / "nobody"),
                  "--count", "2", "--timeout", "20")
        assert raw.returncode == 0, raw.stderr
        assert READING not in raw.stdout and raw.stdout.count(b"\n") == 2
    finally:
        stop(proxy)
    stored = b"".join(open(f, "rb").read() for f in glob.glob(os.path.join(data, "*")) if os.path.isfile(f))
    assert stored, "the proxy stored nothing"
    assert READING not in stored and b"plot7" not in stored
