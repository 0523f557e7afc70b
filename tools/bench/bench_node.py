"""The sensor node's footprint and costs (issue 7's closing figures).

    PYTHONPATH=host:.:tools/bench python tools/bench/bench_node.py [--publishes N]

1. Retained heap on the virtual board (MicroPython 1.27 VM, measured with
   gc.mem_alloc() after a collection between mpremote commands, when
   control is back in the VM's host loop): bare VM (the anchor), after
   importing the node's modules from .mpy, after building a node with 2
   topics and a full CYCLON view, and along N publishes (the bounded
   buffers fill, then no growth).
2. Total size of what `upsycle flash` copies, per arch.
2b. (--only modules) RAM each module of the running node costs when
   imported from .mpy, one per row in dependency order, against its .mpy
   size; the set is what a node that booted and had a reading acknowledged
   holds in sys.modules.
3. Boot to first acknowledged publish on a virtual board with a proxy.
4. Bytes on air per reading (--only air): our sealed publish + ack as Noise
   datagrams over UDP: group_pub on the long session ids, the earlier
   compact reading (group_rd) and the signed reading (group_rs: no nonce,
   no AEAD tag, ids packed) on short ids, signed per reading and in batches
   of 8 under one signature, against a bare MQTT 3.1.1 QoS-1 PUBLISH + PUBACK
   over TCP (the anchor) and the same over TLS 1.3.
5. CPU per reading (--only cpu [--micropython PATH]): sealing and opening
   one reading in each form on CPython, the VM and a MicroPython binary
   (the forms take turns, so a loaded machine slows them alike).
"""
import argparse
import ast
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

from table import render
from upsycle import boards, flashing, vm
from upsycle.commands import board as board_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPREMOTE = [sys.executable, "-m", "mpremote"]
IP_UDP = 20 + 8
IP_TCP = 20 + 20


def _invites(n):
    from shared_protocol.groups.admin import Admin
    from shared_protocol.groups.invite import invite_url
    out = []
    for i in range(n):
        a = Admin(os.urandom(32), os.urandom(32), 0, "bench%d" % i)
        out.append(invite_url(a.invite(os.urandom(32), read=True, write=True)))
    return out


def _start_board(fs, name):
    from upsycle.field_demo import Proc
    p = Proc(board_cmd.server_command(0, fs, name=name, echo=True), name, None)
    p.wait_url()
    return p


def _flash(url, cfg_extra=None, proxies=(), invites=(), interval=60):
    prof = boards.load("virtual")
    base = dict(cfg_extra or {})
    cfg = flashing.make_config(prof, base, wifi=["upsycle-lab:upsycle-lab"], proxies=list(proxies),
                               invites=list(invites), interval=interval)
    # a build folder of its own: the default one is shared by every
    # checkout on this machine, and another's build may land in it meanwhile
    with tempfile.TemporaryDirectory() as build:
        flashing.flash(url, prof, cfg, out=lambda s: None, build_dir=build, tail=False)
    return cfg


@contextlib.contextmanager
def _proxy_and_flash(d, name, topics):
    """A proxy running and a board flash (in d) flashed for it with
    ``topics`` invites, publishing every second; yields the flash directory
    to start boards on. The proxy stops on exit."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
    from proxy_rig import free_port, start_proxy, stop
    port = free_port()
    proxy = start_proxy(os.path.join(d, "proxy"), port)
    try:
        fs = os.path.join(d, "flash")
        os.makedirs(fs)
        p = _start_board(fs, name)
        _flash(p.url, proxies=["127.0.0.1:%d" % port], invites=_invites(topics), interval=1)
        p.stop()
        yield fs
    finally:
        stop(proxy)


def heap(publishes):
    with tempfile.TemporaryDirectory() as d:
        p = _start_board(d, "heap")
        try:
            cfg = _flash(p.url, {"lan": {"port": 47001, "peers": ["127.0.0.1:47002"]}},
                         proxies=["127.0.0.1:9"], invites=_invites(2))
            steps = [
                "import gc",
                "gc.collect()", "print('M', gc.mem_alloc())",
                # Everything the node below holds, the modules it loads
                # lazily included, so the next row is the node's own state.
                # (the build packs the shared modules, the topic and the
                # links into bundles: host/upsycle/mpy_bundle.py)
                "from firmware import runtime, app\n"
                "from shared_protocol import bundle_topics, bundle_link, bundle_lan\n"
                # the rows below count readings through the replica's app API
                "import shared_protocol.dmc.replica_api",
                "gc.collect()", "print('M', gc.mem_alloc())",
                "import json\ncfg = json.load(open('/config.json'))\nnode = runtime.Node(cfg, data_dir='/bench', log=lambda m: None)\n"
                "runtime.forget_boot_modules()\n"   # as runtime.main() does once the node is built
                "node.open_lan('127.0.0.1')\n"
                "for i in range(8): node.lan.lan.cyclon.heard(bytes([i + 1]) * 32, b'127.0.0.1:%d' % (48000 + i))\n"
                "tp = node.topics[0]",
                "gc.collect()", "print('M', gc.mem_alloc(), len(node.lan.lan.cyclon))",
            ]
            # Allocation per idle loop turn (no link, LAN timers not due):
            # gc off, mem_alloc grows by what the turns allocate. One turn
            # first: the first after boot writes the new replica to flash.
            steps.append("t0 = runtime.platform.ticks_ms()\nnode.turn(t0)\n"
                         "gc.collect()\ngc.disable()\na = gc.mem_alloc()\n"
                         "for i in range(1000): node.turn(t0)\nb = gc.mem_alloc()\ngc.enable()\n"
                         "print('T', (b - a) / 1000)")
            marks = [0]
            done = 0
            chunk = 50
            while done < publishes:
                steps.append("for i in range(%d):\n node.publish(tp.topic, 'temp', 20.0 + i / 100)\n"
                             " tp.acked(tp.author, tp.replica.vv[tp.author])" % chunk)
                done += chunk
                if done in (100, 200, 300, 500, 1000) or done == publishes:
                    steps += ["gc.collect()", "print('M', gc.mem_alloc(), %d, len(tp.replica.tail), "
                              "len(tp.replica.readings('temp')), len(tp.outbox))" % done]
                    marks.append(done)
            # The same with an open (plaintext) session and nothing to do.
            steps.append("from shared_protocol import bundle_topics as E\n"
                         "n2 = runtime.Node(dict(cfg, link='plaintext'), data_dir='/bench2', log=lambda m: None)\n"
                         "t0 = runtime.platform.ticks_ms()\nn2.proxy.session.start(t0, False)\n"
                         "n2.proxy.receive(E.REGISTRY.encode('s_welcome', b'proxy', 10000, 8), t0)\nn2.proxy.sock = 1\n"
                         "n2.turn(t0)\nn2.proxy.outgoing()")
            steps.append("gc.collect()\ngc.disable()\na = gc.mem_alloc()\n"
                         "for i in range(1000): n2.turn(t0)\nb = gc.mem_alloc()\ngc.enable()\n"
                         "print('T', (b - a) / 1000)\ndel n2")
            args = MPREMOTE + ["connect", p.url]
            for s in steps:
                args += ["exec", s]
            t0 = time.monotonic()
            r = subprocess.run(args, capture_output=True, text=True, timeout=1800, cwd=ROOT)
            elapsed = time.monotonic() - t0
            if r.returncode != 0:
                raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
        finally:
            p.stop()
    turn = [l.split()[1] for l in r.stdout.splitlines() if l.startswith("T ")]
    vals = [l.split() for l in r.stdout.splitlines() if l.startswith("M ")]
    base, mods, node = int(vals[0][1]), int(vals[1][1]), int(vals[2][1])
    rows = [["bare VM (anchor)", base, 0, "", ""],
            ["+ node modules (.mpy, bytecode in RAM)", mods, mods - base, "", ""],
            ["+ node: 2 topics, full view (%s peers)" % vals[2][2], node, node - mods, "", ""]]
    for v in vals[3:]:
        rows.append(["after %s publishes (tail %s, log %s, outbox %s)" % (v[2], v[3], v[4], v[5]),
                     int(v[1]), int(v[1]) - node, "%+d" % (int(v[1]) - int(vals[3][1])), ""])
    print(render("Retained heap on the virtual board, bytes (gc.mem_alloc after collect; %d publishes "
                 "with flash saves took %.0f s)" % (publishes, elapsed),
                 ["state", "mem_alloc", "delta vs row above/node", "vs first publish row", ""], rows))
    last = int(vals[-1][1])
    print("node's own state (budget 49152): %d bytes after boot, %d after %s publishes; "
          "with its modules loaded from .mpy: %d bytes after boot" % (node - mods, last - mods, vals[-1][2], node - base))
    print("allocation per idle loop turn (Node.turn): no link %s bytes; open session %s bytes"
          % (turn[0], turn[1]))


def sizes():
    from bench_board import flashed_builds
    runtime = ("runtime.mpy", "core.mpy", "proxy_link.mpy", "lan_link.mpy", "topic.mpy", "app.mpy",
               "platform.mpy", "lan.mpy")
    rows = []
    for arch, files, src, total in flashed_builds():
        mine = sum(n for r, n in files if r.split("/")[-1] in runtime)
        rows.append([arch, len(files), src, total, total / src, mine])
    print(render("Flashed firmware size, bytes (.py source is the anchor)",
                 ["arch", "files", ".py source", ".mpy + root .py", "ratio", "of which node runtime"], rows))


# ------------------------------------------------------------------ modules

PROJECT_PACKAGES = ("shared_protocol", "firmware")


def _is_project(name):
    return name.split(".")[0] in PROJECT_PACKAGES


def _module_file(name):
    base = os.path.join(ROOT, *name.split("."))
    if os.path.isdir(base):
        return os.path.join(base, "__init__.py")
    return base + ".py"


_BUILT = {}


def _module_source(name, built):
    """The source of module `name`: with `built`, as a board gets it
    (firmware_build.board_modules: bundles, and imports of bundled modules
    rewritten) where the build holds it; else the checkout's file."""
    if built and not _BUILT:
        from upsycle import firmware_build
        for remote, text in firmware_build.board_modules():
            _BUILT[firmware_build.module_name(remote)] = text
    if built and name in _BUILT:
        return _BUILT[name]
    with open(_module_file(name)) as f:
        return f.read()


def _import_deps(name, built=False):
    """Project modules `name` imports when it is imported: its package
    parents and the imports at module level (not inside functions, which
    run later, if at all); with `built`, of the module as a board gets it."""
    parts = name.split(".")
    deps = [".".join(parts[:i]) for i in range(1, len(parts))]
    tree = ast.parse(_module_source(name, built))
    todo = list(tree.body)
    while todo:
        n = todo.pop(0)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(n, ast.Import):
            for a in n.names:
                deps.append(a.name)
        elif isinstance(n, ast.ImportFrom) and n.module:
            deps.append(n.module)
            for a in n.names:   # `from pkg import mod` imports pkg.mod when it is a module
                sub = n.module + "." + a.name
                if _is_project(sub) and ((built and sub in _BUILT) or os.path.exists(_module_file(sub))):
                    deps.append(sub)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo += getattr(n, field, [])
    out = []
    for d in deps:
        if _is_project(d):
            parts = d.split(".")
            out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [d for d in out if d != name]


def dependency_order(names, built=True):
    """names with each module after every project module it imports (so
    importing them in this order, each row costs that module alone); with
    `built`, the modules as a board gets them (the rows import the build)."""
    order, seen = [], set()

    def visit(n):
        if n in seen:
            return
        seen.add(n)
        for d in sorted(set(_import_deps(n, built))):
            visit(d)
        order.append(n)

    for n in sorted(names):
        visit(n)
    return order


def _running_node_modules(d):
    """sys.modules (project modules only) of a node that booted from its
    flash, opened the proxy session and had a reading acknowledged."""
    with _proxy_and_flash(d, "mods", 2) as fs:
        p = _start_board(fs, "mods")
        try:
            t0 = time.monotonic()
            while not any("first reading acknowledged" in l for l in list(p.lines)):
                if time.monotonic() - t0 > 60:
                    raise RuntimeError("no acknowledged reading within 60 s:\n" + "\n".join(p.lines))
                time.sleep(0.05)
            time.sleep(1.5)   # a few more turns of the steady state
            # resume: no soft reset, so the VM that ran the node answers
            # (mpremote's Ctrl-C stops the node's task first).
            r = subprocess.run(MPREMOTE + ["connect", p.url, "resume", "exec",
                                           "import sys, gc\ngc.collect()\nprint('S', ' '.join(sorted(sys.modules)))",
                                           "exec", "print('M', gc.mem_alloc())"],
                               capture_output=True, text=True, timeout=120, cwd=ROOT)
            if r.returncode != 0:
                raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
        finally:
            p.stop()
    mods = []
    after = None
    for l in r.stdout.splitlines():
        if l.startswith("S "):
            mods = [m for m in l.split()[1:] if _is_project(m)]
        elif l.startswith("M "):
            after = int(l.split()[1])
    return mods, after


def modules():
    sizes = {}   # module -> .mpy bytes (the virtual board's build: plain bytecode)
    with tempfile.TemporaryDirectory() as build:
        for local, remote in flashing.build(boards.load("virtual"), build):
            if remote.endswith(".mpy"):
                name = remote[len("lib/"):-len(".mpy")].replace("/", ".")
                if name.endswith(".__init__"):
                    name = name[:-len(".__init__")]
                sizes[name] = os.path.getsize(local)
    with tempfile.TemporaryDirectory() as d:
        loaded, running = _running_node_modules(d)
        order = dependency_order(loaded)
        extra = [m for m in order if m not in loaded]
        if extra:
            raise RuntimeError("dependency order names modules the node did not load: %s" % extra)
        fs = os.path.join(d, "flash2")
        os.makedirs(fs)
        p = _start_board(fs, "mods2")
        try:
            _flash(p.url, proxies=["127.0.0.1:9"], invites=_invites(1))
            # After each import: which project modules it brought in (a
            # package whose __init__ imports its submodules loads them all).
            steps = ["import gc, sys\n_seen = set(sys.modules)", "gc.collect()", "print('M', gc.mem_alloc())"]
            for m in order:
                steps += ["import " + m + "\n_new = [k for k in sys.modules if k not in _seen]\n"
                          "_seen.update(_new)\nprint('N', ' '.join(sorted(_new)))\ndel _new",
                          "gc.collect()", "print('M', gc.mem_alloc())"]
            r = subprocess.run(MPREMOTE + ["connect", p.url] + [x for s in steps for x in ("exec", s)],
                               capture_output=True, text=True, timeout=1800, cwd=ROOT)
            if r.returncode != 0:
                raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
        finally:
            p.stop()
    vals = [int(l.split()[1]) for l in r.stdout.splitlines() if l.startswith("M ")]
    lines_n = [l.split()[1:] for l in r.stdout.splitlines() if l.startswith("N")]
    news = [[x for x in n if _is_project(x)] for n in lines_n]
    # Board modules a row pulls in (socket, asyncio...): built into the
    # firmware on a board, Python modules in the virtual board's VM.
    board = [[x for x in n if not _is_project(x) and not x.startswith("_vboard")] for n in lines_n]
    bare = vals[0]
    rows = [["bare VM (anchor)", "", bare, "", ""]]
    total_mpy = 0
    for i, m in enumerate(order):
        ram = vals[i + 1] - vals[i]
        mpy = sum(sizes.get(x, 0) for x in news[i])
        total_mpy += mpy
        label = m
        if not news[i]:
            label = m + " (loaded by a row above)"
        elif news[i] != [m]:
            label = "%s + %d more it loads: %s" % (m, len(news[i]) - 1,
                                                   " ".join(x.split(".")[-1] for x in news[i] if x != m))
        if board[i]:
            label += " (and the VM's %s)" % " ".join(board[i])
        rows.append([label, mpy, ram, ram / mpy if mpy else "", ram / bare])
    total = vals[-1] - bare
    rows.append(["total: %d modules the node loads" % len(order), total_mpy, total, total / total_mpy, total / bare])
    print(render("RAM of the node's modules imported from .mpy on the virtual board, bytes (gc.mem_alloc "
                 "after collect; one row per module in dependency order, so a row is that module alone; "
                 "the set is sys.modules of a node that booted with a proxy and 2 topics, no LAN, and had "
                 "a reading acknowledged)",
                 ["module", ".mpy bytes", "RAM", "RAM / .mpy", "vs bare VM"], rows))
    not_loaded = sorted(m for m in sizes if m not in loaded)
    print("flashed but not loaded by the running node (%d): %s" % (len(not_loaded), " ".join(not_loaded)))
    print("rows are gc.mem_alloc deltas: a row that makes the VM grow a shared table (the qstr pool, "
          "sys.modules) carries that growth, so single rows vary by a few KB between orders; the total does not")
    print("whole heap of that board after the node's task stopped (modules + what stays referenced): %d bytes"
          % running)


def boot_to_ack():
    rows = []
    with tempfile.TemporaryDirectory() as d, _proxy_and_flash(d, "boot", 1) as fs:
        for run in range(3):
            t0 = time.monotonic()
            p = _start_board(fs, "boot")
            marks = {}
            while time.monotonic() - t0 < 60 and "ack" not in marks:
                for l in list(p.lines):
                    if "node up" in l and "up" not in marks:
                        marks["up"] = time.monotonic() - t0
                    if "proxy session open" in l and "open" not in marks:
                        marks["open"] = time.monotonic() - t0
                    if "first reading acknowledged" in l:
                        marks["ack"] = time.monotonic() - t0
                time.sleep(0.01)
            p.stop()
            rows.append(["power-on %d" % (run + 1), marks.get("up"), marks.get("open"), marks.get("ack")])
    t0 = time.monotonic()
    subprocess.run(vm.command() + ["--code", "pass"], check=True, capture_output=True)
    bare = time.monotonic() - t0
    print(render("Virtual board: seconds from power-on (board process start) to ... ; anchor: a bare VM "
                 "process runs `pass` in %.2f s" % bare, ["run", "node up", "proxy session", "first ack"], rows))


def _ops(n, warm=999):
    """n DMC append ops as a node that has run for a while sends them: its
    replica has seen two other authors, each of whom wrote between two of
    its readings, so every op carries causal deps (sequence ~1000: a day at
    one reading a minute)."""
    from firmware.core import AUTHOR_BYTES
    from shared_protocol.dmc.replica import Replica
    r = Replica(os.urandom(AUTHOR_BYTES))
    others = [Replica(os.urandom(AUTHOR_BYTES)) for _ in range(2)]
    t = 1763683200
    out = []
    for i in range(warm + n):
        for o in others:
            r.receive(o.append("temp", t, 22.5))
        t += 60
        op = r.append("temp", t, 23.45)
        if i >= warm:
            out.append(op)
    return r, out


def on_air():
    """One reading as the node sends it (firmware/topic.py next_message,
    firmware/runtime.py): DMC append ops sealed for the group, published on
    the session, acked, each session message in one Noise transport datagram
    (the node's UDP link). Before: group_pub on s_publish/s_puback (what every
    message carried until compact readings). After: group_rd on the short
    session ids (s_pub_a/s_ack_a), signed per reading or in batches."""
    from firmware.topic import message_seq, reading_dictionary
    from shared_protocol.wire import cbor
    from shared_protocol.wire import envelope as E
    from shared_protocol.session import messages as W
    from shared_protocol.dmc import ops as O
    from shared_protocol.groups import readings, wire
    from shared_protocol.groups.admin import Admin
    from shared_protocol.groups.invite import member_from_invite
    from shared_protocol.noise.datagram import NONCE_PREFIX
    from shared_protocol.noise.symmetric import TAGLEN
    a = Admin(os.urandom(32), os.urandom(32), 0, "field")
    m = member_from_invite(a.invite(os.urandom(32), read=True, write=True))
    node_id = os.urandom(32)
    replica, ops = _ops(wire.BATCH_MAX)
    op = ops[0]
    author, dseq = O.author_seq(op)
    deps = O.decode(op)[3]
    mseq = message_seq(author, dseq)
    # before: the long forms
    sealed_old = m.seal(op, os.urandom(32), 1763683201)
    mid = W.message_id(node_id, mseq)
    pub_old, ack_old = W.encode_publish(m.topic, mid, sealed_old), W.encode_puback(mid)
    base = message_seq(author, 0)
    short = W.alias_for([(m.topic, base)], m.topic, mid, node_id)
    # the earlier compact form (group_rd: random nonce, AEAD tag, op as is)
    m.seal_compact([op], False, os.urandom(32), 1763683201)
    sealed_v1 = m.seal_compact([op], False, os.urandom(32), 1763683201)
    pub_v1 = E.REGISTRY.encode("s_pub_a", short[0], short[1], sealed_v1)
    # after: a signed reading (group_rs) in steady state (the author
    # introduced itself and its dictionary earlier on this link), and the
    # message that carries the introduction; the dictionary as the node
    # makes it (firmware/topic.py reading_dictionary)
    m.set_dictionary(reading_dictionary(replica, ["temp"]))
    first = m.seal_reading(op, os.urandom(32), 1763683201)
    sealed_rd = m.seal_reading(op, os.urandom(32), 1763683201)
    pub_rd = E.REGISTRY.encode("s_pub_a", short[0], short[1], sealed_rd)
    ack_rd = E.REGISTRY.encode("s_ack_a", short[0], short[1])
    intro_extra = len(first) - len(sealed_rd)
    # a battery node's batch: BATCH_MAX readings under one signature, one message
    sealed_b = m.seal_batch(ops, os.urandom(32), 1763683201)
    last = W.alias_for([(m.topic, base)], m.topic, W.message_id(node_id, message_seq(author, O.author_seq(ops[-1])[1])),
                       node_id)
    pub_b = E.REGISTRY.encode("s_pub_a", last[0], last[1], sealed_b)
    ack_b = E.REGISTRY.encode("s_ack_a", last[0], last[1])
    nb = len(ops)
    noise = 1 + NONCE_PREFIX + TAGLEN   # kind byte | nonce | AEAD tag (noise/udp.py, datagram.py)
    # MQTT 3.1.1: PUBLISH = fixed header (1 + remaining-length bytes) + topic
    # (2 + len) + packet id (2) + payload; PUBACK = 4 bytes. Same topic name
    # as a typical bridge would use, same reading as text.
    topic = b"upsycle/field/node1/temp"
    payload = b"23.45"
    rem = 2 + len(topic) + 2 + len(payload)
    mqtt_pub = 1 + (1 if rem < 128 else 2) + rem
    mqtt_ack = 4
    mq = mqtt_pub + mqtt_ack
    tls = 5 + 1 + 16    # TLS 1.3 record: header, inner content type, AEAD tag (RFC 8446 §5.2)
    anchor = mq + 2 * IP_TCP

    def row(name, pub, ack, per, ip):
        app = (pub + ack) / per
        return [name, pub / per, ack / per, app, app + ip / per, (app + ip / per) / anchor]

    rows = [
        row("MQTT QoS-1 PUBLISH+PUBACK (anchor)", mqtt_pub, mqtt_ack, 1, 2 * IP_TCP),
        row("MQTT QoS-1 over TLS 1.3", mqtt_pub + tls, mqtt_ack + tls, 1, 2 * IP_TCP),
        row("before: group_pub, s_publish/s_puback, Noise", len(pub_old) + noise, len(ack_old) + noise, 1, 2 * IP_UDP),
        row("earlier: group_rd, s_pub_a/s_ack_a, Noise", len(pub_v1) + noise, len(ack_rd) + noise, 1, 2 * IP_UDP),
        row("signed: group_rs, s_pub_a/s_ack_a, Noise", len(pub_rd) + noise, len(ack_rd) + noise, 1, 2 * IP_UDP),
        row("  + introduction every %d messages, amortized" % readings.INTRO_EVERY,
            len(pub_rd) + noise + intro_extra / readings.INTRO_EVERY, len(ack_rd) + noise, 1, 2 * IP_UDP),
        row("batch of %d, one signature (per reading)" % nb, len(pub_b) + noise, len(ack_b) + noise, nb, 2 * IP_UDP),
    ]
    print(render("Bytes on air per reading (payload 23.45; IP/TCP headers for MQTT, IP/UDP for ours; "
                 "DMC op %d B, its seq %d, deps of %d authors)" % (len(op), dseq, len(deps)),
                 ["protocol", "publish", "ack", "app bytes", "+ IP headers", "ratio"], rows))
    ours_old = len(pub_old) + len(ack_old) + 2 * noise
    ours_v1 = len(pub_v1) + len(ack_rd) + 2 * noise
    ours = len(pub_rd) + len(ack_rd) + 2 * noise
    inner_v1 = len(sealed_v1) - len(op) - (len(cbor.encode(op)) - len(op))
    # the op as group_rs carries it: the plaintext after the head
    data = E.REGISTRY.decode(sealed_rd)["data"]
    plain = readings._stream(m.epoch_key().sym, readings._rs_nonce(data[:32]), data[32:])
    head = 1 + wire.AREF_SIZE + 1 + ((plain[32] & wire.RS_CLEN) >> 4) + 1   # generation's low byte only
    packed = len(plain) - 32 - head
    dep_bytes = len(cbor.encode([x for d in deps for x in d]))
    cap_b = len(cbor.encode(capability_wire(m)))
    parts = [
        ["DMC op: author, seq, clock, deps, kind, name, time, value (after: author ids packed)",
         len(op), len(op), packed],
        ["  of which causal deps (%d authors; after: packed)" % len(deps), dep_bytes, dep_bytes,
         dep_bytes - 2 * (1 + 8 - 1)],
        ["author's Ed25519 signature (after: R in clear, S encrypted, no heads)", 64 + 2, 64 + 2, 64],
        ["group: author key + capability (before) / 4-byte author reference", 33 + cap_b, 1 + wire.AREF_SIZE,
         wire.AREF_SIZE],
        ["group: the rest (seq, nonce, AEAD tag, epoch, topic id before, CBOR heads)",
         len(sealed_old) - len(op) - 66 - 33 - cap_b, inner_v1 - 66 - 1 - wire.AREF_SIZE,
         len(sealed_rd) - packed - 64 - wire.AREF_SIZE],
        ["session publish header (topic id, message id / alias, n)", len(pub_old) - len(sealed_old),
         len(pub_v1) - len(sealed_v1), len(pub_rd) - len(sealed_rd)],
        ["session ack", len(ack_old), len(ack_rd), len(ack_rd)],
        ["Noise transport, per datagram x 2", 2 * noise, 2 * noise, 2 * noise],
        ["total", ours_old, ours_v1, ours],
    ]
    print(render("Where the bytes of one signed reading go", ["part", "before: group_pub", "earlier: group_rd",
                                                              "after: group_rs"], parts))
    print("the introduction (author key + capability) adds %d B to one message in %d; a batch of %d readings "
          "is one %d-byte publish + %d-byte ack, Noise included: %.1f B per reading"
          % (intro_extra, readings.INTRO_EVERY, nb, len(pub_b) + noise, len(ack_b) + noise,
             (len(pub_b) + len(ack_b) + 2 * noise) / nb))
    print("signed reading, group_rs: %d B (target 160); earlier group_rd %d B, group_pub %d B"
          % (ours, ours_v1, ours_old))


def capability_wire(m):
    from shared_protocol.groups.keys import capability_on_wire
    return capability_on_wire(m.capability)


def cpu(micropython=None, n=15):
    """CPU per reading, seal (author) and open (reader), for the three forms,
    on CPython (pure crypto), the MicroPython VM and optionally a MicroPython
    binary (e.g. a 32-bit unix build)."""
    wl = os.path.join(ROOT, "tools", "bench", "reading_workload.py")
    cols = []
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, wl, str(n)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    cols.append(("CPython pure", r.stdout))
    r = subprocess.run(vm.command() + ["--file", wl], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    cols.append(("MicroPython VM", r.stdout + r.stderr))
    if micropython:
        r = subprocess.run([micropython, "-X", "heapsize=4m", wl, str(n)], capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, MICROPYPATH=ROOT), timeout=1800)
        cols.append((os.path.basename(micropython), r.stdout + r.stderr))
    figs = []
    for name, out in cols:
        line = [x for x in out.splitlines() if x.startswith("@@BENCH ")]
        if not line:
            raise RuntimeError("%s: no result\n%s" % (name, out[-2000:]))
        figs.append((name, json.loads(line[0][8:])))
    rows = []
    for form, base, label in (("pub", "pub", "first: group_pub (2 Ed25519 verifies per open)"),
                              ("rd", "pub", "before: group_rd (author's capability checked once)"),
                              ("rs", "rd", "after: group_rs (no AEAD tag, ids packed)"),
                              ("rdbatch", "rdbatch", "before: batch of 8, group_rd, one signature"),
                              ("batch", "rdbatch", "after: batch of 8, group_rs, one signature")):
        for side in ("seal", "open"):
            k = form + "_" + side
            rows.append(["%s, %s" % (label, "author seals" if side == "seal" else "reader opens")]
                        + ["%.2f (%.2fx)" % (f[k], f[k] / f[base + "_" + side]) for _, f in figs])
    print(render("CPU per reading, ms (median of %d messages; ratio in the same run: group_rd vs group_pub, "
                 "group_rs vs group_rd; reader in steady state, author already introduced)" % n,
                 ["form"] + [c for c, _ in figs], rows))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--publishes", type=int, default=1000)
    ap.add_argument("--only", choices=["heap", "sizes", "boot", "air", "modules", "cpu"])
    ap.add_argument("--micropython", help="also measure CPU per reading on this MicroPython binary (--only cpu)")
    a = ap.parse_args()
    if a.only in (None, "air"):
        on_air()
    if a.only in (None, "cpu"):
        cpu(a.micropython)
    if a.only in (None, "sizes"):
        sizes()
    if a.only in (None, "boot"):
        boot_to_ack()
    if a.only in (None, "modules"):
        modules()
    if a.only in (None, "heap"):
        heap(a.publishes)


if __name__ == "__main__":
    main()
