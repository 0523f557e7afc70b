"""A removal reaching a board: a virtual board (the real MicroPython VM
running the flashed firmware) publishes readings on a private topic through
a proxy process; the admin removes another member with `upsycle topic
remove --proxy`; the board applies the re-key it receives on the topic and
seals its next readings in the new epoch: a remaining member opens them,
the removed member cannot."""
import os
import re
import sqlite3
import time

from proxy_rig import cli, free_port, start_proxy
from test_node_vboard import _flash, _wait_line

from shared_protocol.wire import envelope
from shared_protocol.groups import wire
from upsycle.commands import board as board_cmd
from upsycle.field_demo import Proc
from upsycle.group_codec import GroupCodec
from upsycle.topic_store import TopicStore

# Readings sealed after the re-key that the test waits for (one a second).
AFTER = 3


def _ok(p):
    assert p.returncode == 0, (p.stdout, p.stderr)
    return p.stdout.decode()


def test_virtual_board_applies_a_removal_and_seals_in_the_new_epoch(tmp_path):
    port = free_port()
    proxy = start_proxy(str(tmp_path / "proxy"), port)
    hp = "127.0.0.1:%d" % port
    admin, carol, bob = (str(tmp_path / n) for n in ("admin", "carol", "bob"))
    _ok(cli("topic", "--home", admin, "create", "field"))
    board_inv = _ok(cli("topic", "--home", admin, "invite", "field", "--read", "--write", "--no-qr")).strip()
    for home in (carol, bob):
        _ok(cli("topic", "--home", home, "join",
                _ok(cli("topic", "--home", admin, "invite", "field", "--read", "--no-qr")).strip()))
    bob_key = TopicStore(bob).find("field").identity.public.hex()
    toml = tmp_path / "node.toml"
    toml.write_text("[app]\nreadings = 0\n")
    fs = str(tmp_path / "flash")
    os.makedirs(fs)
    procs = []
    try:
        p = Proc(board_cmd.server_command(0, fs, name="b", echo=True), "b", None)
        procs.append(p)
        p.wait_url()
        _flash(p, port, board_inv, toml)
        p.stop()
        p = Proc(board_cmd.server_command(0, fs, name="b", echo=True), "b", None)
        procs.append(p)
        p.wait_url()
        _wait_line(p, "first reading acknowledged", 0, timeout=60)
        out = _ok(cli("topic", "--home", admin, "remove", "field", bob_key[:12], "--proxy", hp))
        assert "re-key published" in out
        _wait_line(p, "re-keyed to epoch 1", 0, timeout=60)
        acked = re.compile(r"acked (\d+)")

        def acks():
            n = [int(m.group(1)) for line in p.lines for m in [acked.search(line)] if m]
            return n[-1] if n else 0
        start = acks()
        end = time.monotonic() + 60
        while acks() < start + AFTER + 1 and time.monotonic() < end:
            time.sleep(0.2)
        p.stop()
        assert not [line for line in p.lines if "SAFE MODE" in line or "Traceback" in line], p.lines[-30:]
    finally:
        for x in procs:
            x.stop()
        proxy.terminate()
        proxy.wait(timeout=20)

    topic = TopicStore(admin).find("field").topic
    db = sqlite3.connect(os.path.join(str(tmp_path / "proxy"), "proxy.sqlite3"))
    stored = [bytes(r[0]) for r in db.execute("SELECT payload FROM messages WHERE topic=? ORDER BY seq", (topic,))]
    db.close()
    def kind(x):
        # (type, epoch): a compact or signed reading (group_rd, group_rs) has no topic field before its epoch
        m = envelope.REGISTRY.decode(x)
        return m.type, m.values[0] if m.type in (wire.RD, wire.RS) else m.values[1]
    kinds = [kind(x) for x in stored]
    readings = (wire.PUB, wire.RD, wire.RS)
    rekey_at = [i for i, (t, _) in enumerate(kinds) if t is wire.REKEY]
    assert len(rekey_at) == 1, kinds
    new = [x for x, (t, e) in zip(stored, kinds) if t in readings and e == 1]
    assert len(new) >= AFTER, kinds           # the board sealed in the new epoch
    assert all(e == 1 for t, e in kinds[rekey_at[0] + 1:][-AFTER:]), kinds
    # the remaining member opens the board's new readings; the removed one cannot
    c, b = GroupCodec(TopicStore(carol)), GroupCodec(TopicStore(bob))
    opened_c = [c.decode(topic, x) for x in stored]
    opened_b = [b.decode(topic, x) for x in stored]
    for i, (t, e) in enumerate(kinds):
        if t in readings and e == 1:
            assert isinstance(opened_c[i], (bytes, list)), opened_c[i]
            assert not isinstance(opened_b[i], (bytes, list)), opened_b[i]
