"""The node runtime on CPython: persistence under power cuts, bad input.

firmware/topic.py and firmware/runtime.py are board code; their logic runs
unchanged here (firmware/platform.py falls back to plain calls), with the
file layer injected so a power cut can fall between any two steps.
"""
import json
import os

from upsycle.processes import free_port

from shared_protocol.wire import envelope as E
from shared_protocol.dmc import store as dstore
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url

from firmware import core, runtime
from firmware.topic import Topic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AUTHOR = bytes(range(32))


def _invite(seed=b"\x07" * 32):
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    return invite_url(admin.invite(seed, read=True, write=True))


class PowerCut(Exception):
    pass


class CutFiles(dstore.OsFiles):
    """The real files, but the power goes after ``budget`` steps (a write of
    part of a file counts as one step and leaves the part on disk)."""

    def __init__(self, budget):
        self.budget = budget

    def _step(self):
        self.budget -= 1
        if self.budget < 0:
            raise PowerCut()

    def open(self, path):
        self._step()
        f = open(path, "wb")
        files = self

        class W:
            def write(self, data):
                half = bytes(data)[:max(1, len(data) // 2)]
                if files.budget == 0:
                    f.write(half)
                    f.close()
                    files._step()
                files._step()
                f.write(data)

            def close(self):
                f.close()
        return W()

    def rename(self, src, dst):
        self._step()
        os.rename(src, dst)

    def remove(self, path):
        self._step()
        dstore.OsFiles.remove(self, path)


def test_power_cut_at_every_step_loses_nothing_accepted(tmp_path):
    inv = _invite()
    cuts = 0
    for budget in range(0, 40):
        d = tmp_path / ("b%d" % budget)
        d.mkdir()
        t = Topic(inv, AUTHOR, str(d), log=lambda m: None)
        t.append("temp", 1000, 20.5)
        t.save()
        before = t.replica.snapshot()
        t2 = Topic(inv, AUTHOR, str(d), files=CutFiles(budget), log=lambda m: None)
        try:
            t2.append("temp", 1001, 21.5)
            t2.save()
            done = True
        except PowerCut:
            done = False
            cuts += 1
        msgs = []
        t3 = Topic(inv, AUTHOR, str(d), log=msgs.append)
        assert msgs == [], msgs           # nothing found corrupt
        n = len(t3.replica.readings("temp"))
        assert n in (1, 2)
        if done:
            assert n == 2
        if n == 1:
            assert t3.replica.snapshot() == before
        for op in t3.outbox:              # every queued op is in the replica
            assert t3.replica.receive(op) == 0
        # The group sequence number never goes back (no replayed seq).
        assert t3.member.next_seq >= t.member.next_seq
    assert 0 < cuts < 40


def test_a_replica_saved_with_a_longer_tail_boots_with_the_boards_bound(tmp_path):
    from firmware import topic as T
    inv = _invite()
    t = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    t.replica.limit_tail(64)     # as the firmware before this bound saved it
    for i in range(40):
        t.append("temp", 1000 + i, 20.5)
    t.outbox = []
    t.save()
    assert len(t.replica.tail) == 40
    state = t.replica.snapshot()
    t2 = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    assert t2.replica.tail_max == T.BOARD_TAIL and t2.replica.tail == t.replica.tail[-T.BOARD_TAIL:]
    assert t2.replica.snapshot() == state and len(t2.replica.readings("temp")) == 40
    assert t2.dirty_replica      # the shorter tail goes to flash with the next save
    assert t.replica.pending_max == t2.replica.pending_max == T.BOARD_PENDING
    t2.save()
    assert dstore.Store(t.store.path).load().tail_max == T.BOARD_TAIL


def test_a_replica_saved_with_a_longer_log_boots_with_the_boards_retention(tmp_path):
    from firmware import topic as T
    inv = _invite()
    t = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None, log_keep=200)   # as a firmware before saved it
    for i in range(100):
        t.append("temp", 1000 + i, 20.5 + i)
    t.outbox = []
    t.save()
    assert len(t.replica.readings("temp")) == 100
    t2 = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    assert t2.replica.cfg[0] == T.LOG_KEEP < 100
    assert t2.replica.readings("temp") == t.replica.readings("temp")[-T.LOG_KEEP:]
    assert t2.dirty_replica      # the shorter log goes to flash with the next save
    t2.save()
    assert dstore.Store(t.store.path).load().cfg[0] == T.LOG_KEEP
    # the config's bound (firmware/config.py "replica") wins over the default
    t3 = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None, log_keep=10)
    assert t3.replica.readings("temp") == t.replica.readings("temp")[-10:]
    for i in range(5):
        t3.append("temp", 2000 + i, 1.0)
    assert len(t3.replica.readings("temp")) == 10


def test_state_files_over_the_store_limit_are_set_aside_not_read(tmp_path):
    inv = _invite()
    t = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    t.append("temp", 1000, 20.5)
    t.save()
    for path in (t.base + ".st", t.store.path):
        with open(path, "wb") as f:
            f.write(b"\x00" * (dstore.STORE_MAX + 1))
    msgs = []
    t2 = Topic(inv, AUTHOR, str(tmp_path), log=msgs.append)
    assert len(msgs) == 2 and all("over %d" % dstore.STORE_MAX in m and ".bad" in m for m in msgs), msgs
    assert os.path.exists(t.base + ".st.bad") and os.path.exists(t.store.path + ".bad")
    assert t2.replica.readings("temp") == []   # started fresh; the proxy fills it in again
    t2.append("temp", 1001, 21.5)
    t2.save()
    assert len(Topic(inv, AUTHOR, str(tmp_path), log=msgs.append).replica.readings("temp")) == 1


def test_corrupt_replica_file_is_set_aside_with_a_clear_message(tmp_path):
    inv = _invite()
    t = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    t.append("temp", 1000, 20.5)
    t.save()
    with open(t.store.path, "r+b") as f:
        f.seek(12)
        f.write(b"\xff\xff\xff")
    msgs = []
    t2 = Topic(inv, AUTHOR, str(tmp_path), log=msgs.append)
    assert len(msgs) == 1 and "unreadable" in msgs[0] and "checksum" in msgs[0] and ".bad" in msgs[0]
    assert os.path.exists(t.store.path + ".bad")
    # The outbox still held the reading: it is back in the fresh replica.
    assert len(t2.replica.readings("temp")) == 1
    t2.save()
    assert Topic(inv, AUTHOR, str(tmp_path), log=lambda m: pytest_fail(m)).replica.readings("temp")


def pytest_fail(m):
    raise AssertionError(m)


def test_corrupt_state_file_is_set_aside(tmp_path):
    inv = _invite()
    t = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    t.append("temp", 1000, 20.5)
    t.save()
    with open(t.base + ".st", "wb") as f:
        f.write(b"garbage")
    msgs = []
    t2 = Topic(inv, AUTHOR, str(tmp_path), log=msgs.append)
    assert len(msgs) == 1 and "unreadable" in msgs[0]
    assert len(t2.replica.readings("temp")) == 1   # the replica file was fine


def _node(tmp_path, logs, link="plaintext"):
    cfg = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [_invite(), "upsycle://join?v=1&i=AAAA"],
           "proxies": ["127.0.0.1:9"], "publish_interval_s": 1, "link": link}
    return runtime.Node(cfg, data_dir=str(tmp_path), log=logs.append)


def test_bad_invite_is_skipped_with_a_message(tmp_path):
    logs = []
    n = _node(tmp_path, logs)
    assert len(n.topics) == 1
    assert any("invite is unusable" in m for m in logs)


def test_proxy_speaking_garbage_is_logged_and_the_node_keeps_working(tmp_path):
    logs = []
    n = _node(tmp_path, logs)
    for t in n.topics:
        n.proxy.session.subscribe(t.topic, 0)
    n.proxy.session.start(0, False)
    n.proxy.sock = object()   # the link is "open": the test carries the datagrams itself
    n.proxy.outgoing()
    garbage = [b"", b"\x00" * 50, b"\xff" * 1200, bytes(range(256)),
               E.REGISTRY.encode("ping", 1)[:-1]]
    for i, g in enumerate(garbage):
        n.proxy.receive(g, 10 + i)
    n.turn(20)
    assert n.counts["errors"] == len(garbage)
    assert sum("bad message from the proxy" in m for m in logs) == len(garbage)
    # Still a working session: welcome, then a reading goes out sealed.
    n.proxy.receive(E.REGISTRY.encode("s_welcome", b"proxy", 10000, 8), 30)
    n.publish("field", "temp", 22.5)
    n.turn(31)
    out = n.proxy.outgoing()
    names = [E.REGISTRY.decode(m).name for m in out]
    # the short publish: the topic named by its index in the hello's table
    assert "s_pub_a" in names and "s_subscribe" in names
    pub = [E.REGISTRY.decode(m) for m in out if E.REGISTRY.decode(m).name == "s_pub_a"][0]
    assert b"temp" not in pub.values[-1]       # sealed
    assert E.REGISTRY.decode(pub.values[-1]).name == "group_rs"   # a signed reading
    # The ack (short form: alias and n) empties the outbox, on flash too.
    n.proxy.receive(E.REGISTRY.encode("s_ack_a", pub.values[0], pub.values[1]), 40)
    n.turn(41)
    assert n.topics[0].outbox == []
    assert Topic(_invite(), n.node_author, str(tmp_path), log=pytest_fail).outbox == []
    # Garbage flooding stops being logged past the limit.
    for i in range(100):
        n.proxy.receive(b"\x01\x02", 50 + i)
    n.turn(200)
    assert sum("bad message" in m for m in logs) == core.ERRORS_LOGGED_MAX


def test_secure_link_drops_garbage_and_says_so(tmp_path):
    logs = []
    n = _node(tmp_path, logs, link="noise")
    n.proxy.link.start(0, b"\x05" * 32)
    n.proxy.sock = object()
    first = n.proxy.outgoing()
    assert len(first) == 1 and b"temp" not in first[0]     # the handshake's first message
    for i, g in enumerate([b"\x00" * 80, b"\xff" * 1200, bytes(range(200))]):
        n.proxy.receive(g, 10 + i)
    n.turn(20)
    assert n.proxy.link.dropped == 3
    assert sum("failed the secure link" in m for m in logs) == 3
    # The session id is bound to the node key (the proxy checks it).
    from shared_protocol.session.secure_client import node_id_for
    from shared_protocol.crypto import api
    from shared_protocol.groups.keys import Identity
    assert n.proxy.session.node_id == node_id_for(api.x25519_public(Identity(bytes.fromhex("cd" * 32)).x25519_secret))


def test_pinned_proxy_key_refuses_another_proxy(tmp_path):
    """`host:port@KEY` in the config: a proxy with any other static key fails
    the handshake (a typed link failure, logged), the right one passes."""
    from shared_protocol.crypto import api
    from shared_protocol.noise.handshake import Handshake
    from shared_protocol.noise.udp import UdpSession
    from shared_protocol.session.secure_client import PROLOGUE
    from firmware import config

    right, wrong = b"\x11" * 32, b"\x22" * 32
    pinned = api.x25519_public(right).hex()
    assert config.split_proxy_key("127.0.0.1:9@" + pinned) == ("127.0.0.1:9", bytes.fromhex(pinned))
    assert config.split_proxy_key("127.0.0.1:9@beef") == ("127.0.0.1:9", None)

    def attempt(proxy_static):
        logs = []
        cfg = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [_invite()],
               "proxies": ["127.0.0.1:9@" + pinned], "publish_interval_s": 1, "link": "noise"}
        n = runtime.Node(cfg, data_dir=str(tmp_path / proxy_static.hex()[:4]), log=logs.append)
        assert n.proxy.open()
        try:
            assert n.proxy.link.proxy_key == bytes.fromhex(pinned)
            proxy = UdpSession(Handshake(False, proxy_static, b"\x33" * 32, PROLOGUE, None))
            for m in n.proxy.outgoing():
                proxy.receive(m, 1)
            for m in proxy.packets_to_send():
                n.proxy.receive(m, 2)
            n.turn(3)
            return n, logs
        finally:
            n.proxy.sock.close()

    n, logs = attempt(wrong)
    assert not n.proxy.link.secured
    assert any("proxy link lost" in m for m in logs), logs
    n, logs = attempt(right)
    assert n.proxy.link.secured, logs
    assert any("pinned key" in m for m in logs)



def test_set_aside_replica_refills_and_writes_under_a_new_author(tmp_path):
    from firmware.topic import message_seq
    from shared_protocol.dmc import ops as O
    inv = _invite()
    t = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    assert t.author[:4] == AUTHOR[:4] and len(t.author) == runtime.AUTHOR_BYTES
    ops = [t.append("temp", 1000 + i, 20.0 + i) for i in range(3)]
    t.acked(t.author, 2)             # the proxy holds two; the third is still in the outbox
    assert t.outbox == ops[2:]
    t.save()
    assert not t.refilling
    with open(t.store.path, "wb") as f:
        f.write(b"DMC1" + b"\x00" * 40)
    t2 = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    assert t2.refilling and os.path.exists(t2.base + ".rf") and os.path.exists(t.store.path + ".bad")
    assert t2.member.to_record()["windows"] == []     # the history may open again
    # A new generation: same node prefix, new id, so sequence 1 again clashes
    # with nothing, at peers or at the proxy (message ids differ too).
    assert t2.author != t.author and t2.author[:4] == t.author[:4]
    op4 = t2.append("temp", 2000, 1.0)
    assert O.author_seq(op4) == (t2.author, 1)
    assert message_seq(t2.author, 1) != message_seq(t.author, 1)
    assert message_seq(t.author, 1) & 0xFFFFFFFF == 1
    # The old generation's unacknowledged op is still owed to the proxy; an
    # ack for the new generation's seq 1 must not drop it.
    assert t2.outbox == [ops[2], op4]
    t2.acked(t2.author, 1)
    assert t2.outbox == [ops[2]]
    # A reset before the proxy answered: the marker makes the next boot
    # refill too, under the generation already on flash.
    t2.save()
    t3 = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    assert t3.refilling and t3.author == t2.author
    for op in ops:                   # the proxy delivers the old ones again
        t3.apply(op)
    assert len(t3.replica.readings("temp")) == 4
    t3.end_refill()
    t3.save()
    assert not os.path.exists(t3.base + ".rf")
    t4 = Topic(inv, AUTHOR, str(tmp_path), log=pytest_fail)
    assert not t4.refilling and len(t4.replica.readings("temp")) == 4 and t4.author == t2.author


def test_a_replica_of_another_node_is_set_aside(tmp_path):
    inv = _invite()
    t = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    t.append("temp", 1000, 20.0)
    t.acked(t.author, 1)
    t.save()
    msgs = []
    other = bytes(reversed(AUTHOR))
    t2 = Topic(inv, other, str(tmp_path), log=msgs.append)
    assert any("another node" in m for m in msgs), msgs
    assert t2.author[:4] == other[:4] and t2.replica.readings("temp") == []


def test_lost_replica_with_state_kept_refills_but_a_first_boot_does_not(tmp_path):
    inv = _invite()
    t = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    assert not t.refilling           # first boot: a new subscriber gets the history anyway
    t.append("temp", 1000, 20.0)
    t.save()
    os.remove(t.store.path)
    t2 = Topic(inv, AUTHOR, str(tmp_path), log=lambda m: None)
    assert t2.refilling


def test_socket_read_size_is_the_datagram_limit():
    # runtime.RX_MAX repeats framing.DATAGRAM_MAX so the node need not load
    # wire/framing.py; a change to one must change the other.
    from shared_protocol.wire import framing
    from firmware import lan_link
    assert runtime.RX_MAX == framing.DATAGRAM_MAX
    # the block held for reads (platform.keep_room) fits the largest read
    assert runtime.platform.RX_ROOM == lan_link._RX_MAX >= runtime.RX_MAX


def test_boot_only_modules_are_kept_on_cpython():
    # forget_boot_modules() frees RAM on boards only; on CPython the modules
    # (and classes other code holds) stay the same objects.
    import sys
    from firmware import config
    runtime.forget_boot_modules()
    assert sys.modules["firmware.config"] is config


def test_a_node_loads_only_what_it_runs(tmp_path):
    """Each module imported from .mpy keeps its bytecode in a board's heap:
    a node without a lan section never loads the LAN link or its protocol
    layers, and one that only appends readings loads no other data type.
    With a lan section the LAN link comes in."""
    import subprocess
    import sys
    code = (
        "import json, sys\n"
        "from firmware import runtime\n"
        "cfg = json.loads(sys.argv[1])\n"
        "n = runtime.Node(cfg, data_dir=sys.argv[2], log=lambda m: None)\n"
        "n.publish('field', 'temp', 21.5)\n"
        "print(n.open_lan('127.0.0.1'))\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('firmware', 'shared_protocol')))))\n")
    base = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [_invite()], "publish_interval_s": 1}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "host")]))

    def loaded(cfg, d):
        r = subprocess.run([sys.executable, "-c", code, json.dumps(cfg), str(tmp_path / d)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        lan_on, mods = r.stdout.splitlines()
        return lan_on == "True", set(mods.split())

    lan_on, mods = loaded(base, "a")
    assert not lan_on
    assert "shared_protocol.dmc.crdt_log" in mods
    lan = ("firmware.lan_link", "shared_protocol.overlay.lan", "shared_protocol.overlay.cyclon",
           "shared_protocol.dmc.sync", "shared_protocol.wire.framing", "shared_protocol.rand")
    for m in lan + ("shared_protocol.dmc.crdt_map", "shared_protocol.dmc.crdt_set",
                    "shared_protocol.dmc.crdt_counter", "shared_protocol.groups.admin",
                    "shared_protocol.session.proxy"):
        assert m not in mods, m
    # preload.TOPICS imports what loading the topics needs, then
    # preload.link_modules what the links need: all of it together, each
    # module after those it imports (tools/bench/bench_node.py's order)
    from firmware import preload
    sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))
    from bench_node import _import_deps
    boot_only = set(runtime.BOOT_ONLY)
    order = preload.TOPICS + preload.link_modules(base)
    assert mods - boot_only == set(order)
    for i, m in enumerate(order):
        assert set(_import_deps(m)) <= set(order[:i]), m
    # ... and loading the topics needs none of the links' modules
    for m in preload.TOPICS + runtime.BOOT_ONLY:
        assert not set(_import_deps(m)) & set(preload.LINK + preload.LAN), m
    lan_cfg = dict(base, lan={"port": free_port()})
    lan_on, mods = loaded(lan_cfg, "b")
    assert lan_on and set(lan) <= mods
    order = preload.TOPICS + preload.link_modules(lan_cfg)
    assert mods - boot_only == set(order)
    for i, m in enumerate(order):
        assert set(_import_deps(m)) <= set(order[:i]), m


def _open_session(n, t=0):
    n.proxy.session.start(t, False)
    n.proxy.sock = 1
    n.proxy.receive(E.REGISTRY.encode("s_welcome", b"proxy", 10000, 8), t)
    n.turn(t)
    n.proxy.outgoing()


def test_batch_mode_waits_for_a_full_batch_then_sends_one_signed_message(tmp_path):
    from shared_protocol.groups import wire
    logs = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inv_a, inv_b = _invite(b"\x07" * 32), _invite(b"\x08" * 32)
    cfg = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [inv_a], "proxies": ["127.0.0.1:9"],
           "link": "plaintext", "batch": {"readings": 4}, "sleep": {"awake_s": 1, "sleep_s": 60}}
    a = runtime.Node(cfg, data_dir=str(tmp_path / "a"), log=logs.append)
    b = runtime.Node(dict(cfg, node_id="ef" * 32, topics=[inv_b], batch=None), data_dir=str(tmp_path / "b"),
                     log=logs.append)
    assert a.topics[0].batch == 4 and b.topics[0].batch == 1
    _open_session(a)
    for i in range(3):
        a.publish("field", "temp", 20.0 + i, t=1000 + i)
        a.turn(10 + i)
        assert [E.REGISTRY.decode(m).name for m in a.proxy.outgoing()] == []   # the batch is still filling
    assert runtime._ready_to_sleep(a, 0, 2000)          # a filling batch does not keep it awake
    a.publish("field", "temp", 23.0, t=1003)
    a.turn(20)
    out = [E.REGISTRY.decode(m) for m in a.proxy.outgoing()]
    assert [m.name for m in out] == ["s_pub_a"]
    sealed = out[0].values[-1]
    inner = E.REGISTRY.decode(sealed)
    assert inner.name == "group_rs"
    # another member's node opens the four readings from the one message
    tb = b.topics[0]
    got = tb.open(sealed, 1763683201)
    assert len(got) == 4
    for body in got:
        tb.apply(body)
    assert [v for _, v in tb.replica.readings("temp")] == [20.0, 21.0, 22.0, 23.0]
    assert not runtime._ready_to_sleep(a, 0, 2000)    # the full batch waits for its ack
    # one ack (named by the batch's last op) clears all four ops
    a.proxy.receive(E.REGISTRY.encode("s_ack_a", out[0].values[0], out[0].values[1]), 21)
    a.turn(22)
    assert a.topics[0].outbox == [] and a.counts["acked"] == 1
    assert wire.BATCH_MAX >= 4


def test_bad_batch_config_signs_every_reading(tmp_path):
    logs = []
    cfg = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [_invite()], "link": "plaintext",
           "batch": {"readings": 99}}
    n = runtime.Node(cfg, data_dir=str(tmp_path), log=logs.append)
    assert n.topics[0].batch == 1 and any("config 'batch'" in m for m in logs)


def test_idle_loop_turns_read_no_empty_socket(tmp_path):
    """A read of an empty socket raises EAGAIN: on a board that allocates
    the exception and, on the unix port, the whole receive buffer, every
    turn. The LAN link reads only when the poller says a datagram waits,
    and then reads it."""
    import socket
    cfg = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [_invite()], "publish_interval_s": 1,
           "lan": {"port": free_port(), "peers": []}}
    n = runtime.Node(cfg, data_dir=str(tmp_path / "d"), log=lambda m: None)
    assert n.open_lan("127.0.0.1")
    link = n.lan
    real = link.sock
    reads = []

    class Counting:
        def fileno(self):
            return real.fileno()

        def recvfrom(self, size):
            reads.append(size)
            return real.recvfrom(size)

        def sendto(self, data, addr):
            return real.sendto(data, addr)

    link.sock = Counting()
    link.poller = runtime.platform.Poller(link.sock)
    now = runtime.platform.ticks_ms()
    for _ in range(50):
        link.io(now, runtime.platform.NoWatchdog())
    assert reads == []
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"not a lan message", ("127.0.0.1", cfg["lan"]["port"]))
        for _ in range(100):
            if link.poller.ready():
                break
            import time
            time.sleep(0.01)
        link.io(now, runtime.platform.NoWatchdog())
    finally:
        s.close()
        real.close()
    assert len(reads) == 1


def test_quiet_group_codes_are_codes_the_group_layer_raises():
    # A re-key part already applied or meant for other members is a copy,
    # not a fault: the node neither counts nor logs it. The codes must be
    # the ones groups/errors.py gives (they were once spelled with dashes
    # and matched nothing).
    from firmware import core
    from shared_protocol.groups import errors
    codes = set()
    for name in [l.split()[0] for l in errors.KINDS.splitlines() if l] + dir(errors):
        c = getattr(errors, name)
        if isinstance(c, type) and issubclass(c, errors.GroupError):
            codes.add(c.code)
    assert core._QUIET_CODES == (errors.StaleEpoch.code, errors.OtherRekeyPart.code)
    assert set(core._QUIET_CODES) <= codes


def test_idle_turn_with_an_open_session_seals_nothing_and_reads_no_clock(tmp_path, monkeypatch):
    """On a 32-bit board the wall clock is a big int and next_message builds
    a list: an idle turn allocated 224 bytes (tools/bench/bench_node.py
    --only heap). With an empty outbox the window is not looked at."""
    from firmware import platform
    from firmware.topic import Topic as T
    calls = []
    clock_now = platform.unix_time
    monkeypatch.setattr(platform, "unix_time", lambda: calls.append("clock") or clock_now())
    real_next = T.next_message
    monkeypatch.setattr(T, "next_message", lambda self, *a: calls.append("next") or real_next(self, *a))
    cfg = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [_invite()], "publish_interval_s": 1,
           "link": "plaintext"}
    n = runtime.Node(cfg, data_dir=str(tmp_path / "d"), log=lambda m: None)
    _open_session(n)
    del calls[:]
    for _ in range(100):
        n.turn(0)
    assert calls == []
    n.publish("field", "temp", 21.5, t=1)
    n.turn(0)
    assert "next" in calls and "clock" in calls


def test_ble_preload_covers_the_ble_link_in_import_order():
    """A node with transport ble imports firmware/ble_link.py and what it
    needs one module at a time (preload.BLE), each after its imports."""
    import sys
    from firmware import preload
    sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))
    from bench_node import _import_deps
    have = list(preload.TOPICS + preload.LINK)
    for m in preload.BLE:
        deps = set(d for d in _import_deps(m) if d.startswith(("firmware", "shared_protocol")))
        assert deps <= set(have), (m, deps - set(have))
        have.append(m)
    assert "firmware.ble_link" in preload.BLE


def test_each_datagram_s_deliveries_are_opened_before_the_next_read(tmp_path):
    """The loop reads up to _RX_PER_TURN datagrams a turn. Queued until the
    turn, a burst's deliveries were all held while the first one's signature
    was checked, the tightest moment of a board's heap: each datagram's
    deliveries are opened as it is read (saves and acks stay the turn's)."""
    import socket
    from shared_protocol.groups.invite import member_from_url
    from node_rig import open_node
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    n = open_node(str(tmp_path / "b"), invite_url(admin.invite(b"\x07" * 32, read=True, write=True)), [])
    other = member_from_url(invite_url(admin.invite(b"\x08" * 32, read=True, write=True)))
    tp = n.topics[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    proxy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        proxy.bind(("127.0.0.1", 0))
        sock.connect(proxy.getsockname())
        n.proxy.sock = sock
        n.proxy.poller = poller = runtime.platform.Poller(sock)
        calls = []
        receive, deliver = n.proxy.receive, n.deliver

        def on_receive(data, now):
            calls.append("read")
            receive(data, now)

        def on_deliver(topic, seq, payload):
            calls.append("opened %d" % seq)
            deliver(topic, seq, payload)
        n.proxy.receive, n.deliver = on_receive, on_deliver
        for seq in (1, 2, 3):
            sealed = other.seal(b"\x00" * 8, bytes([seq]) * 32)
            proxy.sendto(E.REGISTRY.encode("s_deliver", tp.topic, seq, b"m%d" % seq, sealed), sock.getsockname())
        import time
        for _ in range(100):
            if poller.ready():
                break
            time.sleep(0.01)
        time.sleep(0.05)   # all three queued: one turn reads them
        assert runtime.read_proxy(n.proxy, poller, runtime.platform.NoWatchdog()) == 3
    finally:
        sock.close()
        proxy.close()
    assert calls == ["read", "opened 1", "read", "opened 2", "read", "opened 3"]
    assert [s for _, s in n.proxy.pending_consumed] == [1, 2, 3]   # acked only after the turn's save
