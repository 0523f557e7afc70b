# Runs on CPython and in the MicroPython VM: replica persistence.
import os

from rig import raises, IS_MICROPYTHON
from shared_protocol.dmc import Replica, Store, StoreError, OsFiles
from shared_protocol.dmc import store as ST
from shared_protocol.dmc import errors as E

A = b"\x0a" * 16
B = b"\x0b" * 16
PATH = "/tmp/dmc-test-topic.bin"


class PowerCut(Exception):
    pass


class FakeFiles:
    """An in-memory flash that loses power before step number ``cut``.

    Steps are open, write, close, rename, remove. ``torn``: an unclosed file
    keeps what was written so far (the worst case); otherwise it keeps
    nothing (littlefs commits on close). ``replaces``: rename over an
    existing file works (littlefs, POSIX) or raises OSError (FAT)."""

    def __init__(self, files=None, cut=None, torn=True, replaces=True):
        self.files = dict(files or {})
        self.cut = cut
        self.steps = 0
        self.torn = torn
        self.replaces = replaces

    def _step(self):
        if self.cut is not None and self.steps >= self.cut:
            raise PowerCut()
        self.steps += 1

    def open(self, path):
        self._step()
        self.files[path] = b""
        return _Writer(self, path)

    def read(self, path):
        return self.files.get(path)

    def rename(self, src, dst):
        self._step()
        if dst in self.files and not self.replaces:
            raise OSError(17)
        self.files[dst] = self.files.pop(src)

    def remove(self, path):
        self._step()
        self.files.pop(path, None)


class _Writer:
    def __init__(self, fs, path):
        self.fs = fs
        self.path = path
        self.buf = b""

    def write(self, chunk):
        self.fs._step()
        self.buf += bytes(chunk)
        if self.fs.torn:
            self.fs.files[self.path] = self.buf

    def close(self):
        self.fs._step()
        self.fs.files[self.path] = self.buf


def _replica(n):
    r = Replica(A, 100, 0)
    for i in range(n):
        r.append("temp", 1000 + i, i)
        if i % 5 == 0:
            r.put("cfg", "k%d" % (i % 7), "v" * (i % 13))
            r.insert("tags", i)
    return r


def _same(x, y):
    return (x.state_bytes() == y.state_bytes() and x.snap_vv == y.snap_vv
            and list(x.tail) == list(y.tail))


def test_round_trip_keeps_state_tail_and_config():
    r = _replica(60)
    b = Replica(B, 100, 0)
    for e in r.tail[:30]:
        b.receive(e)
    r.note_peer(B, dict(b.vv))
    r.compact()
    fs = FakeFiles()
    st = Store("t", fs)
    st.save(r)
    got = st.load()
    assert _same(got, r) and got.author == A and got.cfg == (100, 0)
    # the loaded replica serves the same ops and keeps writing after them
    assert got.ops_since({A: 40}) == r.ops_since({A: 40})
    got.add("c", 1)
    assert got.vv[A] == r.vv[A] + 1


def test_power_cut_at_every_write_step_leaves_old_or_new():
    old = _replica(40)
    new = _replica(90)
    cases = 0
    for torn in (True, False):
        for replaces in (True, False):
            # count the steps of an uninterrupted save
            base = FakeFiles(replaces=replaces)
            Store("t", base).save(old)
            probe = FakeFiles(base.files, replaces=replaces)
            Store("t", probe).save(new)
            total = probe.steps
            assert total >= 6, total
            for cut in range(total + 1):
                fs = FakeFiles(base.files, cut=cut, torn=torn, replaces=replaces)
                try:
                    Store("t", fs).save(new)
                    assert cut == total
                except PowerCut:
                    assert cut < total
                got = Store("t", FakeFiles(fs.files)).load()
                assert _same(got, old) or _same(got, new), (torn, replaces, cut)
                if cut == total:
                    assert _same(got, new)
                cases += 1
            # the first save ever: nothing, or the new state
            for cut in range(total + 1):
                fs = FakeFiles(cut=cut, torn=torn, replaces=replaces)
                try:
                    Store("t", fs).save(new)
                except PowerCut:
                    pass
                try:
                    got = Store("t", FakeFiles(fs.files)).load()
                    assert _same(got, new)
                except StoreError as e:
                    assert e.code == E.MISSING and cut < total
    assert cases >= 24


def test_corruption_is_reported_typed():
    r = _replica(30)
    fs = FakeFiles()
    Store("t", fs).save(r)
    data = fs.files["t"]
    step = 53 if IS_MICROPYTHON else 7
    for i in range(0, len(data), step):
        bad = bytearray(data)
        bad[i] ^= 0x41
        e = raises(StoreError, Store("t", FakeFiles({"t": bytes(bad)})).load)
        assert e.code == E.CORRUPT, i
    for n in (0, 3, 9, len(data) // 2, len(data) - 1):
        e = raises(StoreError, Store("t", FakeFiles({"t": data[:n]})).load)
        assert e.code == E.CORRUPT, n
    # a well-formed file whose payload is not a replica
    from shared_protocol.wire import cbor
    e = raises(StoreError, Store("t", FakeFiles({"t": ST.pack(cbor.encode([1, 2, 3]))})).load)
    assert e.code == E.CORRUPT
    e = raises(StoreError, Store("t", FakeFiles({"t": ST.pack(b"\xff")})).load)
    assert e.code == E.CORRUPT
    e = raises(StoreError, Store("nothing", FakeFiles()).load)
    assert e.code == E.MISSING


def test_real_files_with_os_only():
    st = Store(PATH, OsFiles())
    OsFiles().remove(PATH)
    OsFiles().remove(PATH + ".tmp")
    assert raises(StoreError, st.load).code == E.MISSING
    r = _replica(20)
    st.save(r)
    r.add("c", 5)
    st.save(r)
    got = st.load()
    assert _same(got, r) and got.counter("c") == 5
    names = os.listdir("/tmp")
    assert "dmc-test-topic.bin.tmp" not in names
    with open(PATH, "rb") as f:
        assert OsFiles().read(PATH) == f.read()
    # a file over STORE_MAX is refused without being read (a board cannot
    # hold it), as the typed error load() gives for any bad file
    with open(PATH, "wb") as f:
        f.write(b"\x00" * (ST.STORE_MAX + 1))
    assert raises(StoreError, OsFiles().read, PATH).code == E.CORRUPT
    assert raises(StoreError, st.load).code == E.CORRUPT
    os.remove(PATH)
    assert OsFiles().read(PATH) is None


def test_written_in_chunks_the_file_is_the_whole_encoding():
    """write_value encodes through one reused WRITE_CHUNK buffer: items that
    straddle a chunk's end, a byte string longer than two chunks and a
    last partial chunk all land as pack(cbor.encode(value)) would."""
    from shared_protocol.wire import cbor
    seen = []

    class Sizes(FakeFiles):
        def open(self, path):
            w = FakeFiles.open(self, path)
            write = w.write

            def sized(chunk):
                seen.append(len(chunk))
                write(chunk)
            w.write = sized
            return w

    value = [b"x" * 7, list(range(300)), b"\x01\x02" * (ST.WRITE_CHUNK + 111), "tail", [b"y" * 3] * 50]
    fs = Sizes()
    ST.write_value(fs, PATH, value)
    assert fs.files[PATH] == ST.pack(cbor.encode(value))
    assert max(seen) <= ST.WRITE_CHUNK and seen.count(ST.WRITE_CHUNK) >= 3
