"""Everything that differs between the virtual board, hardware and the
unix port, in one place.

The rest of the firmware imports socket/network/machine through here only
for the few calls that differ: waiting for a datagram (the VM has no
blocking wait, a board polls), socket addresses, randomness, the wall clock
and the sensor. MicroPython's unix port (a development instrument: heap and
float figures, tools/bench/bench_rig.py) has no network or ADC: WiFi is
skipped there and the sensor comes from firmware/unix.py.
"""
import os
import sys
import time

try:
    import vboard                      # the virtual board (host/upsycle/vboard)
    IS_VIRTUAL = True
except ImportError:                    # hardware: poll the socket between sleeps
    import asyncio
    import select
    IS_VIRTUAL = False
    # How often a board looks at its socket while waiting: 20 ms keeps a
    # round trip on the LAN short without spinning the CPU.
    POLL_STEP_MS = 20


class Poller:
    """Whether a datagram waits on one socket, without allocating: the loop
    asks every turn, and a read of an empty socket raises OSError(EAGAIN),
    which allocates the exception and, on the unix port, the whole receive
    buffer (recvfrom allocates it before the call fails). On hardware one
    select.poll object per socket, asked with ipoll (it hands back one reused
    tuple; poll() builds a list each call); on the virtual board the
    socket's own readable()."""

    def __init__(self, sock):
        self.sock = sock
        self.poll = None     # made on the first question (a socket never read needs none)
        self.ipoll = None

    def ready(self):
        if IS_VIRTUAL:
            return self.sock.readable()
        p = self.poll
        if p is None:
            p = self.poll = select.poll()
            p.register(self.sock, select.POLLIN)
            # CPython (the host tests) has no ipoll
            self.ipoll = getattr(p, "ipoll", None)
        if self.ipoll is None:
            return bool(p.poll(0))
        for _ in self.ipoll(0):
            return True
        return False

    def recv(self, size):
        """One datagram of a connected socket (raises OSError if none)."""
        _free_room()
        return self.sock.recv(size)

    def recvfrom(self, size):
        _free_room()
        return self.sock.recvfrom(size)

    async def wait(self, timeout_ms):
        """True once a datagram waits, False after timeout_ms."""
        if IS_VIRTUAL:
            return await vboard.wait_readable(self.sock, timeout_ms)
        waited = 0
        while waited < timeout_ms:
            if self.ready():
                return True
            await asyncio.sleep_ms(POLL_STEP_MS)
            waited += POLL_STEP_MS
        return False


# Tick arithmetic (differences, sums) is shared_protocol/clock.py's.

if sys.implementation.name == "micropython":
    import gc

    def compact():
        """Collect before the node keeps something: a reading applied, a
        publish queued. MicroPython allocates first fit and collects only
        when the heap is full, so what a delivery keeps (a replica entry, a
        replay window) lands above the kilobytes of garbage its Ed25519
        check and AEAD left, and the next collection leaves it standing
        alone among free blocks: after some dozen readings no free block
        holds a 1.2 KB datagram although a third of the heap is free
        (tools/bench/bench_rig.py, micropython.mem_info(1)). Collected
        first, the kept objects fill the lowest holes, next to the old ones.
        Only while the heap is tight (less than COMPACT_BELOW free): in a
        roomy heap nothing needs a large block yet, and each collection
        marks everything kept (some 200 KB with .mpy modules)."""
        if gc.mem_free() < COMPACT_BELOW:
            gc.collect()

    def keep_room():
        """Hold a free block for the next datagram read. Stock firmware's
        sockets have no recv_into: recv and recvfrom allocate the whole
        size they may read (RX_ROOM) in one piece, and as the heap fills
        with small kept objects no such block may be left, although a
        third of the heap is free. This block is taken while the heap is
        tidy (at boot, after each turn's reads) and handed back right
        before a read (_free_room), so the read always finds one."""
        global _room
        if _room is None:
            try:
                _room = bytearray(RX_ROOM)
            except MemoryError:
                pass   # no block now: the next turn tries again

    def _free_room():
        global _room
        if _room is not None:
            _room = None
            gc.collect()

    def collect_often():
        """Collect after every 1/GC_SHARE of the free heap allocated, not
        only when the heap is full: the garbage of a signature check then
        never spreads over the whole heap, and what outlives it stays near
        the bottom, leaving the top in large free blocks for the datagrams.
        Called once the node is built, and only for a tight heap (less
        than GC_TIGHT free): each collection marks everything kept (some
        200 KB with .mpy modules), and in a roomy heap, where fragmentation
        costs nothing yet, a threshold made a reading take 70% more CPU
        (tools/bench/bench_rig.py, .mpy in 600 KB: 72 against 42 ms)."""
        gc.collect()
        free = gc.mem_free()
        if free < GC_TIGHT:
            gc.threshold(max(GC_EVERY_MIN, free // GC_SHARE))
        else:
            gc.threshold(-1)   # the boot's threshold (collect_while_booting) ends

    def collect_while_booting():
        """Collect after every GC_EVERY_MIN allocated while the Node is
        built and its topics loaded, in a heap with less than GC_BOOT_TIGHT
        free. Without it the GC runs only when the heap is full, so what
        the Node keeps (members, replicas, windows: hundreds of small
        objects) lands spread over the whole heap among the boot's garbage
        (invite decoding, replica files): collected, that garbage leaves
        holes between them, and the first datagram reads found no 1.2 KB
        block with 14 KB free (frozen, 70 KB heap:
        micropython.mem_info(1) at the MemoryError). Collected often, the
        kept objects fill the bottom of the heap. collect_often sets the
        threshold of the running node once the Node is built."""
        gc.collect()
        if gc.mem_free() < GC_BOOT_TIGHT:
            gc.threshold(GC_EVERY_MIN)
else:
    def compact():
        pass   # CPython: reference counting frees the garbage at once

    def collect_often():
        pass

    def collect_while_booting():
        pass

    def keep_room():
        pass

    def _free_room():
        pass

_room = None
# The largest read of the node: a LAN datagram (lan_link._RX_MAX; the proxy
# link reads runtime.RX_MAX, less). tests/host/test_node_runtime.py checks.
RX_ROOM = 1264

# See collect_often: a quarter of the free heap keeps the garbage together
# (frozen: 86 KB with a 16 KB threshold, 96 KB without); never below 4 KB,
# where a signature check (hundreds of KB of big-int temporaries) would
# cost hundreds of collections; none when more than GC_TIGHT is free.
GC_SHARE = 4
GC_EVERY_MIN = 4096
GC_TIGHT = 65536
# collect_while_booting: a heap with less free than this when the Node is
# built gets the boot's threshold: more than the node needs with .mpy
# modules (docs/node.md), so every heap that could run short has it; a
# roomier one boots with the collections only a full heap makes.
GC_BOOT_TIGHT = 262144
# compact() collects only below this much free heap: a quarter of the
# smallest board heap the node runs in frozen (docs/node.md), several
# times the largest block a turn needs (a 1.2 KB datagram).
COMPACT_BELOW = 24576

# MicroPython's unix port (sys.platform is "linux" on CPython too).
IS_UNIX = sys.platform == "linux" and sys.implementation.name == "micropython"


# Modules a node needs only while its proxy link's Noise handshake runs:
# proxy_link.py drops them once the link is secured, and a new handshake
# (a link lost, a proxy restarted) imports them again. Imported from .mpy
# they are some 5 KB of heap (tools/bench/bench_rig.py --only modules).
HANDSHAKE_ONLY = ("shared_protocol.noise.handshake", "shared_protocol.noise.known",
                  "shared_protocol.crypto.x25519")


def forget(names):
    """Drop modules from sys.modules and from their package, so nothing
    refers to them and the GC frees their bytecode (a module imported from
    .mpy keeps it in the heap while it is loaded). A later import loads them
    again. Boards only: a CPython host has the RAM, and its tests hold these
    modules' classes."""
    if sys.implementation.name != "micropython":
        return
    for name in names:
        # the module, then each package above it that holds no loaded
        # module any more (a package module is some 100 bytes of heap)
        while name and sys.modules.pop(name, None) is not None:
            pkg, _, leaf = name.rpartition(".")
            try:
                delattr(sys.modules[pkg], leaf)
            except (KeyError, AttributeError):
                pass
            name = pkg
            for k in sys.modules:
                if k.startswith(pkg + "."):
                    name = ""       # still holds one: stays
                    break


def sockaddr(host, port):
    """The address socket calls take: (host, port) on the boards and the
    VM, getaddrinfo's raw bytes on the unix port; getaddrinfo gives each
    port's own form."""
    import socket
    return socket.getaddrinfo(host, port)[0][-1]


if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
else:   # CPython, where the host tests run the same runtime logic
    def ticks_ms():
        return int(time.monotonic() * 1000)


# MicroPython ports count from 2000-01-01 unless built with the Unix epoch;
# readings carry Unix seconds so every member (and the host) agrees.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


def unix_time():
    return int(time.time()) + _EPOCH_OFFSET


def random_bytes(n):
    return os.urandom(n)


def makedirs(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists


def file_exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def rename(src, dst):
    os.rename(src, dst)


# The node's log texts on a board with .mpy modules: the board build
# (host/upsycle/mpy_texts.py) writes every "upsycle: ..." line of the
# firmware, and the error families' lists of kinds, into this file beside
# the modules and calls text() or read_line() where the string stood; a
# string constant would sit in the heap for as long as its module is
# loaded (some 80 bytes a line). Found under a sys.path entry on first
# use (/lib on a board).
TEXTS_FILE = "firmware/texts.txt"
_texts = None


def _open_texts(at):
    """The texts file, open at byte ``at``; OSError when there is none."""
    global _texts
    if _texts is None:
        for p in sys.path:
            p = p + "/" + TEXTS_FILE if p else TEXTS_FILE
            if file_exists(p):
                _texts = p
                break
        else:
            raise OSError(2)    # ENOENT
    f = open(_texts, "rb")
    f.seek(at)
    return f


def read_text(at, n):
    """The text of n bytes at byte ``at`` of the texts file; OSError when
    it cannot be read, MemoryError when no heap is left for the read."""
    with _open_texts(at) as f:
        b = f.read(n)
    if len(b) != n:
        raise OSError(5)        # EIO: a file from another build
    return b.decode()


def read_line(at, n, key):
    """The line of the texts file's n bytes at ``at`` that starts with key
    and a space, without its newline; None if none does. A line at a time:
    an error family's list is up to 900 bytes, and reading it whole (and
    decoding it) asked a tight heap for two blocks of that size at the
    moment a kind is made (shared_protocol/errors.py ``kind``). OSError or
    MemoryError as read_text."""
    k = key.encode() + b" "
    with _open_texts(at) as f:
        while n > 0:
            line = f.readline()
            if not line:
                raise OSError(5)    # a file from another build
            n -= len(line)
            if line.startswith(k):
                return line.rstrip(b"\n").decode()
    return None


def text(at, n, args=None):
    """A log line: read_text(at, n), formatted with args[0] when args is
    given. A file that cannot be read (removed, or no heap for its buffer
    at that moment) gives a line with the offset and the values instead:
    a log line never stops the node."""
    try:
        s = read_text(at, n)
    except (OSError, MemoryError, UnicodeError):
        return "upsycle: log text %d %r" % (at, None if args is None else args[0])
    return s if args is None else s % args[0]


class NoWatchdog:
    def feed(self):
        pass


def watchdog(timeout_ms):
    """machine.WDT; once started it cannot be stopped (docs/micropython.md)."""
    try:
        import machine
        return machine.WDT(timeout=timeout_ms)
    except (ImportError, AttributeError, ValueError):
        return NoWatchdog()


def read_temperature_c(adc_channel=4):
    """The RP2040 internal sensor formula (the virtual board simulates it)."""
    if IS_UNIX:
        from firmware import unix
        return unix.temperature_c()
    import machine
    v = machine.ADC(adc_channel).read_u16() * 3.3 / 65535
    return 27 - (v - 0.706) / 0.001721


def wifi_connect(networks):
    """Start joining the first network; returns the WLAN object or None."""
    try:
        import network
    except ImportError:
        return None
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    for w in networks:
        if wlan.isconnected():
            break
        try:
            wlan.connect(w["ssid"], w.get("password", ""))
        except OSError:
            continue
    return wlan


def reset_cause():
    try:
        import machine
        return machine.reset_cause()
    except (ImportError, AttributeError):
        return 0


def deepsleep(ms):
    """Power down for ms; the board wakes by a reset (main.py runs again)."""
    import machine
    machine.deepsleep(ms)


def woke_from_deepsleep():
    try:
        import machine
        return machine.reset_cause() == getattr(machine, "DEEPSLEEP_RESET", 4)
    except (ImportError, AttributeError):
        return False
