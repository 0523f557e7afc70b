"""Mosquitto, a paho subscriber, the bridge process and host members that
publish readings the way a board does, for the MQTT bridge's tests.

- ``Mosquitto``: the real broker (/usr/sbin/mosquitto, installed by
  tools/setup.sh) on a free loopback port with its own config and
  persistence directory; ``stop()`` (SIGTERM: it saves its database) and
  ``start()`` again on the same port; ``kill()`` (SIGKILL).
- ``Watcher``: a paho-mqtt 2.x subscriber that records every message.
- ``HostBoard``: a member from an invite with its own DMC replica; it
  appends readings and publishes each op sealed and signed through a
  proxy, exactly what firmware/runtime.py does on a board (Member.seal of
  the op bytes), and applies what it receives to its replica.
"""
import asyncio
import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

from proxy_rig import ENV, ROOT, wait_port
from shared_protocol.dmc.replica import Replica
from shared_protocol.groups.invite import member_from_url
from shared_protocol.groups.member import Publication
from upsycle.processes import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def mosquitto_path():
    for p in (MOSQUITTO, shutil.which("mosquitto")):
        if p and os.path.exists(p):
            return p
    raise AssertionError("mosquitto is missing: bash tools/setup.sh install (apt-get install mosquitto)")


class Mosquitto:
    def __init__(self, tmp, users=None):
        """users: {name: password} -> allow_anonymous false and a password file."""
        self.dir = os.path.join(str(tmp), "mosquitto")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        lines = ["listener %d 127.0.0.1" % self.port, "persistence true",
                 "persistence_location %s/" % self.dir, "log_dest stderr", "log_type error",
                 "log_type warning", "max_queued_messages 100000",
                 # Started as root, Mosquitto switches to the user "mosquitto",
                 # which cannot enter pytest's private temp directories.
                 "user %s" % getpass.getuser()]
        if users:
            pw = os.path.join(self.dir, "passwd")
            open(pw, "w").close()
            os.chmod(pw, 0o600)
            for u, p in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", pw, u, p], check=True, capture_output=True)
            lines += ["allow_anonymous false", "password_file %s" % pw]
        else:
            lines += ["allow_anonymous true"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([mosquitto_path(), "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        wait_port(self.port, proc=self.proc)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Watcher:
    """Records (topic, payload, retain) of everything under the filters."""

    def __init__(self, port, filters=("#",), client_id="watcher", clean=True):
        self.msgs = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.filters = filters
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.ready.set()
        c.reconnect_delay_set(0.2, 1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.c = c
        if not self.ready.wait(10):
            raise AssertionError("watcher did not subscribe")

    def _on_connect(self, c, u, flags, rc, props):
        for f in self.filters:
            c.subscribe(f, qos=1)

    def _on_message(self, c, u, m):
        with self.lock:
            self.msgs.append((m.topic, bytes(m.payload), bool(m.retain)))

    def topics(self, prefix):
        with self.lock:
            return [(t, p, r) for t, p, r in self.msgs if t.startswith(prefix)]

    def wait_for(self, pred, timeout=30, what="condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s; got %d messages: %r" % (
            what, len(self.msgs), [(t, p[:80]) for t, p, _ in self.msgs[-10:]]))

    def readings(self, topic_prefix, stream=False):
        """Reading payloads (dicts) on topics under the prefix, in order.
        stream=True leaves out the retained copies the broker hands out on
        each (re)subscribe (retain flag set; MQTT 3.1.1 §3.3.1.3: messages
        sent for an established subscription have it clear): what remains
        is the stream in the order the broker received it."""
        out = []
        for t, p, r in self.topics(topic_prefix):
            if t.endswith(("/availability", "/bridge/status")) or "/set/" in t or not p:
                continue
            if stream and r:
                continue
            out.append((t, json.loads(p)))
        return out

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def one_message(port, topic, timeout=10, **auth):
    """The retained message on ``topic`` (a fresh subscriber), or None."""
    got = []
    ev = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(cl, u, m):
        got.append(bytes(m.payload))
        ev.set()
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    ev.wait(timeout)
    c.loop_stop()
    c.disconnect()
    return got[0] if got else None


def publish(port, topic, payload, retain=False, **kw):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    info = c.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


class Bridge:
    """`upsycle bridge mqtt` as a subprocess; its stderr lines collected."""

    def __init__(self, home, proxy_port, broker_port, *extra, env=None):
        self.cmd = [sys.executable, "-m", "upsycle", "bridge", "mqtt", "--home", str(home),
                    "--proxy", "127.0.0.1:%d" % proxy_port, "--broker", "127.0.0.1:%d" % broker_port] + list(extra)
        self.env = env or ENV
        self.lines = []
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._t = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._t.start()

    def _pump(self, proc):
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, text, timeout=30, since=0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in l for l in self.lines[since:]):
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise AssertionError("bridge exited %d:\n%s" % (self.proc.returncode, "\n".join(self.lines[-30:])))
            time.sleep(0.05)
        raise AssertionError("no %r from the bridge:\n%s" % (text, "\n".join(self.lines[-30:])))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._t.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._t.join(5)


class HostBoard:
    """A topic member that publishes readings as a board does."""

    def __init__(self, invite, port, home, author=None):
        from upsycle.client import Client
        self.member = member_from_url(invite)
        self.replica = Replica(author or os.urandom(8), 200)
        os.makedirs(home, exist_ok=True)
        self.client = Client("127.0.0.1", port, identity=os.urandom(32), home=home)
        self.changes = []

    async def start(self, subscribe=False):
        await self.client.connect(timeout=15)
        if subscribe:
            await self.client.subscribe(self.member.topic)
        return self

    async def publish(self, name, t, value):
        op = self.replica.append(name, t, value)
        sealed = self.member.seal(op, os.urandom(32), int(time.time()))
        await self.client.publish(self.member.topic, sealed)
        return op

    async def receive(self, timeout):
        """Apply deliveries until timeout; returns what on_change would see."""
        end = asyncio.get_running_loop().time() + timeout
        while True:
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return self.changes
            try:
                d = await self.client.next_delivery(timeout=left)
            except asyncio.TimeoutError:
                return self.changes
            if d.missed:
                continue
            ev = self.member.open(d.payload, int(time.time()))
            if isinstance(ev, Publication):
                if self.replica.receive(ev.body) == 1:
                    from shared_protocol.dmc import ops as O
                    op = O.decode(ev.body)
                    if op[4] == O.K_PUT:
                        self.changes.append((op[6], op[7], op[0]))

    async def close(self):
        await self.client.close()
