"""The field demo: a proxy, three virtual boards, a private topic, an outage.

    upsycle demo [--readings N] [--interval S] [--offline S] [--keep DIR]

1. start a proxy (`upsycle proxy`, SQLite) on free loopback ports;
2. create a private topic (an admin key made here) and one invite per board
   plus one for the host subscriber;
3. start three virtual boards (upsycle/vboard) and flash each with
   `upsycle flash` (the real mpremote), its invite and the proxy in its
   config with the proxy's public key pinned (`--proxy host:port@KEY`: the
   boards refuse any other key), and app.readings = N;
4. the boards publish their internal temperature every interval, sealed;
   a host subscriber (CPython, same shared_protocol replica and group code,
   through upsycle.client.Client) prints the merged replica as it changes;
5. board 3 is powered off after a few readings, stays off for a while, and
   is powered on again: it resumes its session and catches up through the
   proxy;
6. once every board has published N readings and every replica (the boards'
   replica files on their flash, and the subscriber's) encodes to the same
   bytes, print a summary and stop everything.

Every process started here is stopped on the way out, whatever happens.
"""
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from shared_protocol.dmc import store as dstore
from shared_protocol.dmc.replica import Replica
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url, member_from_url
from upsycle import topics as host_topics
from upsycle.client import Client
from upsycle.group_codec import GroupCodec, Rejected
from upsycle.topic_store import TopicStore
from upsycle.commands import board as board_cmd
from upsycle import identity

BOARDS = ("node1", "node2", "node3")
OFFLINE_BOARD = "node3"
TOPIC_NAME = "field"
LOG_KEY = "temp"
# The demo must end within two minutes; this is the hard stop.
DEADLINE_S = 110
START_TIMEOUT_S = 20
FLASH_TIMEOUT_S = 60


from upsycle import processes  # noqa: E402


# Every process group the demo started (the e2e test checks none is left).
all_pids = []


def all_pids_hook(p):
    pass


class Proc:
    """A child in its own process group, its output lines collected."""

    def __init__(self, cmd, name, out):
        all_pids_hook(self)
        self.name = name
        self.out = out
        self.lines = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=processes.python_env(),
                                     start_new_session=True, text=True, errors="replace")
        all_pids.append(self.proc.pid)
        self.url = None
        self._ready = threading.Event()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self):
        for line in self.proc.stdout:
            line = line.rstrip("\r\n")
            if self.url is None and line.startswith("socket://"):
                self.url = line
                self._ready.set()
                continue
            self.lines.append(line)
            if self.out and line.startswith("upsycle:"):
                self.out("  [%s] %s" % (self.name, line[len("upsycle: "):]))
        self._ready.set()

    def wait_url(self, timeout=START_TIMEOUT_S):
        self._ready.wait(timeout)
        if self.url is None:
            raise RuntimeError("%s did not start: %s" % (self.name, "\n".join(self.lines[-20:])))
        return self.url

    def stop(self):
        processes.stop(self.proc)
        self._t.join(timeout=2)

    def kill(self):
        """Power cut: no chance to mirror anything more to its flash."""
        processes.kill(self.proc)
        self._t.join(timeout=2)

    def wait_port(self, port):
        processes.wait_port(port, proc=self.proc, output=lambda: "\n".join(self.lines[-20:]))


def load_board_replica(fs_dir, topic_id):
    """The replica a board has on its (mirrored) flash, or None."""
    path = os.path.join(fs_dir, "data", topic_id[:8].hex() + ".dmc")
    try:
        return dstore.Store(path).load()
    except Exception:
        return None


# Distinct reasons a subscriber keeps for refused deliveries (one line each
# in its output); a flood of different garbage must not grow it without end.
REJECT_REASONS_MAX = 16


class Subscriber:
    """The host member: a CPython node with the same replica and group code."""

    def __init__(self, invite, port, out, home, label="subscriber"):
        self.home = home
        self.label = label
        self.member = member_from_url(invite)
        self.replica = Replica(b"host-subscriber", 200)
        self.port = port
        self.out = out
        self.delivered = 0
        self.rejected = 0
        # why deliveries were refused, by error kind and text: logged the first
        # time each is seen, counted after (bounded: REJECT_REASONS_MAX kinds)
        self.reasons = {}
        self.last_print = 0

    async def run(self, stop):
        # A Noise XX link like the boards'; its own static key. Deliveries
        # open through the host's group codec, as `upsycle sub` opens them:
        # a reading that overtook its author's introduction is kept and
        # handed out once the introduction comes (group_codec, "held").
        os.makedirs(self.home, exist_ok=True)
        store = TopicStore(self.home)
        store.save(self.member)
        codec = GroupCodec(store)
        c = Client("127.0.0.1", self.port, transport="udp", identity=os.urandom(32), home=self.home, codec=codec)
        await c.connect(timeout=15)
        try:
            await c.subscribe(self.member.topic)
            while not stop.is_set():
                try:
                    d = await c.next_delivery(timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                if d.missed:
                    continue
                v = d.payload
                if isinstance(v, (bytes, bytearray)):
                    bodies = [v]
                elif isinstance(v, list):
                    bodies = v
                else:
                    if isinstance(v, Rejected):
                        self.rejected += 1
                        self.note_rejected(v.code, v.message)
                    continue    # kept for later (Held) or a re-key applied
                for body in bodies:
                    if self.replica.receive(body) == 1:
                        self.delivered += 1
                        self.show()
        finally:
            await c.close()

    def note_rejected(self, code, message):
        why = "%s: %s" % (code, message)
        if why in self.reasons:
            self.reasons[why] += 1
        elif len(self.reasons) < REJECT_REASONS_MAX:
            self.reasons[why] = 1
            self.out("  [%s] refused a delivery: %s" % (self.label, why))

    def per_author(self):
        counts = {}
        for e in self.replica.obj(4, LOG_KEY).entries() if self.replica.obj(4, LOG_KEY) else []:
            counts[e[1]] = counts.get(e[1], 0) + 1
        return counts

    def show(self):
        now = time.monotonic()
        if now - self.last_print < 1.0:
            return
        self.last_print = now
        lg = self.replica.obj(4, LOG_KEY)
        if lg is None:
            return
        last = {}
        for e in lg.entries():
            last[e[1]] = e[3]
        parts = ["%s..=%sC" % (a[:3].hex(), last[a]) for a in sorted(last)]
        self.out("  [%s] merged replica: %d readings from %d boards; latest %s"
                 % (self.label, len(lg), len(last), " ".join(parts)))


def run(readings=8, interval=1, offline_s=8, keep=None, out=print, sites=1):
    """Run the scenario; returns the summary dict (ok: bool). sites=2: the
    subscriber is at a second site, behind its own proxy, linked to the
    boards' proxy; the link between the sites is cut while node3 is off.
    sites=3: a "home" proxy between them (each site linked to home only,
    keys pinned; a home subscriber keeps the topic there), the link between
    site A and home cut while node3 is off (upsycle.field_sites.Line)."""
    t0 = time.monotonic()
    lock = threading.Lock()
    raw_out = out

    def out(line):   # one line at a time from the board, subscriber and main threads
        with lock:
            raw_out(line)
    work = keep or tempfile.mkdtemp(prefix="upsycle-demo-")
    os.makedirs(work, exist_ok=True)
    procs = []
    boards = {}
    summary = {"ok": False}
    try:
        port = processes.free_port()
        extra = []
        relays = []
        tri = None
        if sites == 2:
            from upsycle import field_sites
            port_b = processes.free_port()
            relays = [field_sites.TcpRelay(port), field_sites.TcpRelay(port_b)]
            summary["relays"] = relays
            extra = field_sites.proxy_args(port, relays[0].port, relays[1].port)
        elif sites == 3:
            from upsycle import field_sites
            tri = field_sites.Line(work, port)
            summary["relays"] = tri.relays
            relays = tri.cut_relays
            port_b = tri.ports["b"]
            home = Proc([sys.executable, "-m", "upsycle", "proxy", "--data", tri.data["home"],
                         "--listen", "127.0.0.1:%d" % tri.ports["home"]] + tri.args("home"), "proxy-home", None)
            procs.append(home)
            home.wait_port(tri.ports["home"])
            tri.pin_home()
            extra = tri.args("a")
        proxy = Proc([sys.executable, "-m", "upsycle", "proxy", "--data", os.path.join(work, "proxy"),
                      "--listen", "127.0.0.1:%d" % port] + extra, "proxy", None)
        procs.append(proxy)
        proxy.wait_port(port)
        sub_port = port
        home_sub = None
        if tri is not None:
            site_b = Proc([sys.executable, "-m", "upsycle", "proxy", "--data", tri.data["b"],
                           "--listen", "127.0.0.1:%d" % port_b] + tri.args("b"), "proxy-b", None)
            procs.append(site_b)
            site_b.wait_port(port_b)
            sub_port = port_b
            out("home: a proxy on 127.0.0.1:%d (key %s...); site B: a proxy on 127.0.0.1:%d; each site linked "
                "to home only (Noise, home's key pinned, through relays the demo can cut); a subscriber at home "
                "and one at site B" % (tri.ports["home"], tri.home_key[:16], port_b))
        if sites == 2:
            site_b = Proc([sys.executable, "-m", "upsycle", "proxy", "--data", os.path.join(work, "proxy-b"),
                           "--listen", "127.0.0.1:%d" % port_b]
                          + field_sites.proxy_args(port_b, relays[1].port, relays[0].port), "proxy-b", None)
            procs.append(site_b)
            site_b.wait_port(port_b)
            sub_port = port_b
            out("site B: a second proxy on 127.0.0.1:%d, linked to site A's over Noise (through a relay "
                "the demo can cut); the subscriber is at site B" % port_b)
        # The proxy made its static key before listening: the boards get its
        # public key pinned in their config (host:port@KEY), so they refuse
        # any other proxy instead of trusting the first key they meet.
        proxy_key = identity.public_key(identity.proxy_key(os.path.join(work, "proxy"))).hex()
        proxy_addr = "127.0.0.1:%d@%s" % (port, proxy_key)
        summary["proxy_key"] = proxy_key
        out("proxy: 127.0.0.1:%d (TCP+UDP, Noise XX links, key %s... pinned on the boards), SQLite in %s"
            % (port, proxy_key[:16], os.path.join(work, "proxy")))

        admin = Admin(os.urandom(32), os.urandom(32), 0, TOPIC_NAME)
        invites = {}
        for b in BOARDS:
            invites[b] = invite_url(admin.invite(os.urandom(32), read=True, write=True))
        sub_invite = invite_url(admin.invite(os.urandom(32), read=True, write=False))
        home_invite = invite_url(admin.invite(os.urandom(32), read=True, write=False))
        topic_id = admin.topic
        out("private topic %r: id %s; one invite per board, one for the host subscriber"
            % (TOPIC_NAME, topic_id.hex()))

        def start_board(name):
            fs = os.path.join(work, name)
            os.makedirs(fs, exist_ok=True)
            p = Proc(board_cmd.server_command(0, fs, name=name, echo=True), name, out)
            procs.append(p)
            p.wait_url()
            old = boards.get(name, {}).get("past", [])
            boards[name] = {"proc": p, "fs": fs, "past": old + [p]}
            return p

        def flash(name):
            p = boards[name]["proc"]
            toml = os.path.join(work, name + ".toml")
            peers = ", ".join('"127.0.0.1:%d"' % lan_ports[b] for b in BOARDS if b != name)
            with open(toml, "w") as f:
                f.write("[app]\nreadings = %d\n\n[lan]\nport = %d\npeers = [%s]\n" % (
                    readings, lan_ports[name], peers))
            r = subprocess.run([sys.executable, "-m", "upsycle", "flash", "--board", "virtual",
                                "--port", p.url, "--config", toml, "--proxy", proxy_addr,
                                "--invite", invites[name], "--wifi", "upsycle-lab:upsycle-lab", "--interval", str(interval), "--no-tail"],
                               env=processes.python_env(), capture_output=True, text=True, timeout=FLASH_TIMEOUT_S)
            boards[name]["flash"] = r

        # LAN: each board has its UDP port and announces to the other two (no
        # broadcast on loopback); CYCLON and sealed anti-entropy run on top.
        lan_ports = {}
        for b in BOARDS:
            lan_ports[b] = processes.free_port()
        for b in BOARDS:
            start_board(b)
        out("flashing %d virtual boards with `upsycle flash` (mpremote) ..." % len(BOARDS))
        ts = [threading.Thread(target=flash, args=(b,)) for b in BOARDS]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for b in BOARDS:
            r = boards[b]["flash"]
            if r.returncode != 0:
                raise RuntimeError("flashing %s failed: %s" % (b, r.stderr[-2000:]))
        out("flashed (%.1f s since start); powering the boards on" % (time.monotonic() - t0))

        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        sub = Subscriber(sub_invite, sub_port, out, os.path.join(work, "subscriber"))
        subs = [sub]
        if tri is not None:
            home_sub = Subscriber(home_invite, tri.ports["home"], out, os.path.join(work, "home-subscriber"), "home")
            subs.append(home_sub)
        sub_thread_err = []

        def sub_main():
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(asyncio.gather(*(x.run(stop) for x in subs)))
            except Exception as e:
                sub_thread_err.append(e)
        st = threading.Thread(target=sub_main, daemon=True)
        st.start()

        # Power cycle each board (a stop and a start on the same flash):
        # from power-on it runs boot.py and main.py, as in the field.
        for b in BOARDS:
            boards[b]["proc"].stop()
            procs.remove(boards[b]["proc"])
            start_board(b)
        t_on = time.monotonic()

        # The outage: node3 is switched off after a few readings. (What
        # the board closed on its flash stays, as littlefs keeps a closed
        # file; the virtual board writes its flash through at those moments,
        # upsycle/vboard/flash.mjs, so a SIGKILL would keep them too.)
        time.sleep(max(3, readings * interval // 3))
        boards[OFFLINE_BOARD]["proc"].stop()
        procs.remove(boards[OFFLINE_BOARD]["proc"])
        out("*** %s switched off (%.1f s after power-on); off for %d s ***"
            % (OFFLINE_BOARD, time.monotonic() - t_on, offline_s))
        for r in relays:
            r.cut()
        if relays:
            out("*** the link between site A and %s is cut ***" % ("home" if tri else "site B"))
        time.sleep(offline_s)
        for r in relays:
            r.restore()
        if relays:
            out("*** the link between the sites is back ***")
        start_board(OFFLINE_BOARD)
        t_back = time.monotonic()
        out("*** %s powered on again ***" % OFFLINE_BOARD)

        expected = None
        converged_at = None
        while time.monotonic() - t0 < DEADLINE_S:
            time.sleep(0.5)
            if all(len(x.per_author()) == len(BOARDS) and all(n == readings for n in x.per_author().values())
                   for x in subs):
                ref = sub.replica.snapshot()
                states = [load_board_replica(boards[b]["fs"], topic_id) for b in BOARDS]
                if all(s is not None and s.snapshot() == ref for s in states):
                    converged_at = time.monotonic()
                    expected = ref
                    break
        stop_sub(loop, stop, st)
        published = 0
        board_logs = {}
        for b in BOARDS:
            r = load_board_replica(boards[b]["fs"], topic_id)
            board_logs[b] = r
        # Each board's own readings, from its own replica (author = its id).
        per = sub.per_author()
        published = sum(per.values()) if per else 0
        summary.update({
            "boards": len(BOARDS),
            "readings_per_board": readings,
            "published": len(BOARDS) * readings,
            "delivered": published,
            "lost": len(BOARDS) * readings - published,
            "lost_home": None if home_sub is None else len(BOARDS) * readings - sum(home_sub.per_author().values()),
            "converged": converged_at is not None,
            "convergence_s": None if converged_at is None else round(converged_at - t_back, 1),
            "elapsed_s": round(time.monotonic() - t0, 1),
            "topic": topic_id,
            "work": work,
            "proxy_db": os.path.join(work, "proxy"),
            "sites": sites,
            "state": expected,
            "board_states": dict((b, None if board_logs[b] is None else board_logs[b].snapshot()) for b in BOARDS),
            "subscriber_errors": [repr(e) for e in sub_thread_err],
            "ops": list(sub.replica.tail),
            "board_lines": dict((b, [l for p in boards[b]["past"] for l in p.lines]) for b in BOARDS),
        })
        summary["ok"] = summary["converged"] and summary["lost"] == 0 and summary["lost_home"] in (None, 0)
        return summary
    finally:
        for p in procs:
            p.stop()
        for r in summary.pop("relays", []):
            r.close()
        summary["pids"] = all_pids
        if keep is None and not summary.get("keep_work"):
            summary["cleanup"] = lambda: shutil.rmtree(work, ignore_errors=True)


def stop_sub(loop, stop, thread):
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=5)
