"""Persistence of a replica: snapshot plus operation tail in one file.

File layout (all integers big-endian):

    magic "DMC1" | payload length (4 bytes) | payload | SHA-256(payload)[:8]

The payload is the deterministic-CBOR ``Replica.dump_value()``. A save writes
``path + ".tmp"``, closes it (littlefs commits a file only on close;
docs/micropython.md) and renames it over ``path``; rename is atomic on littlefs and
POSIX, so a power cut at any point leaves the old file or the new one. On file
systems whose rename refuses an existing target (FAT), the old file is removed
first; a cut between that remove and the rename leaves only the complete
temporary file, which load() then takes.

The file operations go through a small injectable object (``OsFiles`` by
default: ``open``, ``os.rename``, ``os.remove`` only), so tests can cut the
power between any two steps.
"""

import hashlib
import os
import struct

from shared_protocol.wire import cbor
from shared_protocol.dmc.replica import Replica
from shared_protocol.dmc import errors
from shared_protocol.dmc.errors import CORRUPT, MISSING

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

_MAGIC = const(b"DMC1")
_HEADER = const(8)
_CHECK = const(8)
# Largest file accepted: a full snapshot (replica.SNAPSHOT_MAX) plus a tail
# of small operations; the whole file is read into RAM to be checked.
STORE_MAX = 65536
# Bytes per write call, and the buffer a save encodes through (one per
# Store, made when the store is: a long-running board's heap may hold no
# free block of this size by the time it saves, tools/bench/bench_rig.py
# --readings 150). littlefs buffers writes in its own cache, so small ones
# cost calls, not flash wear.
WRITE_CHUNK = 256


class OsFiles:
    """The real file system, through what every MicroPython port has."""

    def open(self, path):
        return open(path, "wb")

    def read(self, path):
        """The file's bytes, None if there is none; StoreError(CORRUPT) if
        it is over STORE_MAX. Read at its size: MicroPython's read(n)
        allocates n bytes first, and read(STORE_MAX + 1) asked a booting
        board for a 64 KB block whatever the file held (a frozen node in
        80 KB could not boot on its own flash, tools/bench/bench_rig.py
        --reboot)."""
        try:
            size = os.stat(path)[6]
            f = open(path, "rb")
        except OSError:
            return None
        try:
            if size > STORE_MAX:
                raise errors.StoreError(CORRUPT, __debug__ and "stored file %s is %d bytes, over %d" % (path, size, STORE_MAX))
            return f.read(size)
        finally:
            f.close()

    def rename(self, src, dst):
        os.rename(src, dst)

    def remove(self, path):
        try:
            os.remove(path)
        except OSError:
            pass


def pack(payload):
    return _MAGIC + struct.pack(">I", len(payload)) + payload + hashlib.sha256(payload).digest()[:_CHECK]


def write_atomic(files, path, payload):
    """The file pack(payload) makes, written in pieces to path + ".tmp" and
    renamed over path (see the module doc): the payload is never copied.
    Returns the file's size."""
    def emit(write):
        mv = memoryview(payload)
        for i in range(0, len(payload), WRITE_CHUNK):
            write(mv[i:i + WRITE_CHUNK])
    return _write(files, path, len(payload), hashlib.sha256(payload).digest()[:_CHECK], emit)


def write_value(files, path, value, buf=None):
    """write_atomic(files, path, cbor.encode(value)) without the encoding
    ever in the heap in one piece: it is made twice, in chunks of
    WRITE_CHUNK, first to count and hash it, then to write it (the
    encoding is deterministic, so both are the same bytes). A replica's
    file is several KB; one allocation of that size per reading is what
    fails first on a board's fragmented heap, with far more free in
    smaller pieces (tools/bench/bench_rig.py). ``buf``: a bytearray of
    WRITE_CHUNK bytes to encode through (Store keeps one), else one is
    made for this save."""
    if buf is None:
        buf = bytearray(WRITE_CHUNK)
    count = _Chunks(None, buf)
    cbor.encode_into(count, value)
    count.flush()

    def emit(write):
        sink = _Chunks(write, buf)
        cbor.encode_into(sink, value)
        sink.flush()
    return _write(files, path, count.n, count.h.digest()[:_CHECK], emit)


class _Chunks:
    """What cbor.encode_into appends to (append/extend, like a bytearray):
    counts and hashes the bytes and hands them to write() in chunks of
    WRITE_CHUNK from the buffer given. (A bytearray grown to the chunk size
    and made anew after each write reallocated several times per chunk:
    with 10 readings per topic, a 532-byte growth was the allocation that
    failed first in a 64 KB frozen node, docs/node.md; a buffer made per
    save was what failed first after 150 readings.) write() must copy what
    it is given before it returns: the buffer is reused."""

    def __init__(self, write, buf):
        self.write = write
        self.buf = buf
        self.mv = memoryview(buf)
        self.k = 0
        self.n = 0
        self.h = hashlib.sha256()

    def append(self, b):
        self.buf[self.k] = b
        self.k += 1
        if self.k == WRITE_CHUNK:
            self.flush()

    def extend(self, data):
        n = len(data)
        if n <= WRITE_CHUNK - self.k:    # the common case: no view made
            self.mv[self.k:self.k + n] = data
            self.k += n
            if self.k == WRITE_CHUNK:
                self.flush()
            return
        src = memoryview(data)
        i = 0
        while i < n:
            take = min(n - i, WRITE_CHUNK - self.k)
            self.mv[self.k:self.k + take] = src[i:i + take]
            self.k += take
            i += take
            if self.k == WRITE_CHUNK:
                self.flush()

    def flush(self):
        k = self.k
        if k:
            part = self.mv[:k]
            self.n += k
            self.h.update(part)
            if self.write is not None:
                self.write(part)
            self.k = 0


def _write(files, path, n, check, emit):
    size = _HEADER + n + _CHECK
    if size > STORE_MAX:
        raise errors.StoreError(CORRUPT, __debug__ and "replica needs %d bytes, over STORE_MAX %d: compact first" % (size, STORE_MAX))
    tmp = path + ".tmp"
    files.remove(tmp)  # a leftover of an interrupted save
    f = files.open(tmp)
    try:
        f.write(_MAGIC + struct.pack(">I", n))
        emit(f.write)
        f.write(check)
    finally:
        f.close()
    try:
        files.rename(tmp, path)
    except OSError:
        files.remove(path)
        files.rename(tmp, path)
    return size


def unpack(data):
    """File bytes -> payload bytes; StoreError(CORRUPT) if any check fails."""
    if data is None:
        raise errors.StoreError(MISSING, __debug__ and "no stored state")
    if len(data) > STORE_MAX:
        raise errors.StoreError(CORRUPT, __debug__ and "stored file is over %d bytes" % STORE_MAX)
    if len(data) < _HEADER + _CHECK or data[:4] != _MAGIC:
        raise errors.StoreError(CORRUPT, __debug__ and "stored file lacks the DMC1 header: not a replica file, or cut short")
    n = struct.unpack(">I", data[4:8])[0]
    if len(data) != _HEADER + n + _CHECK:
        raise errors.StoreError(CORRUPT, __debug__ and "stored file is %d bytes, its header says %d" % (len(data), _HEADER + n + _CHECK))
    # a view, not a copy: the file is in the heap once (a replica's is
    # several KB, read at a board's boot)
    payload = memoryview(data)[_HEADER:_HEADER + n]
    if hashlib.sha256(payload).digest()[:_CHECK] != data[_HEADER + n:]:
        raise errors.StoreError(CORRUPT, __debug__ and "stored file fails its checksum")
    return payload


class Store:
    def __init__(self, path, files=None, buf=None):
        """``buf``: the WRITE_CHUNK bytearray every save encodes through
        (write_value); a board's topics share one (firmware/topic.py), as
        their saves never overlap. Else the Store makes its own."""
        self.path = path
        self.files = files if files is not None else OsFiles()
        self.buf = buf if buf is not None else bytearray(WRITE_CHUNK)

    def save(self, replica):
        return write_value(self.files, self.path, replica.dump_value(), self.buf)

    def load(self):
        """The stored replica; StoreError(MISSING or CORRUPT) otherwise."""
        data = self.files.read(self.path)
        if data is None:
            # Only a complete, closed temporary file can stand in (a cut
            # between remove and rename); a torn one means nothing was saved.
            try:
                return self._decode(self.files.read(self.path + ".tmp"))
            except errors.StoreError:
                raise errors.StoreError(MISSING, __debug__ and "no stored state at %s" % self.path)
        return self._decode(data)

    def _decode(self, data):
        payload = unpack(data)
        try:
            return Replica.restore_bytes(payload)
        except cbor.DecodeError as e:
            raise errors.StoreError(CORRUPT, __debug__ and "stored payload is not deterministic CBOR (%s)" % e.code)
        except errors.SnapshotError as e:
            raise errors.StoreError(CORRUPT, __debug__ and "stored replica is invalid: %s" % e.message)
