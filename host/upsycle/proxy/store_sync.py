"""The WAL sync, in a thread of its own, so the proxy keeps working while
the disk syncs.

With ``synchronous=FULL`` in WAL mode SQLite's COMMIT writes the
transaction's frames to the WAL and then syncs the WAL file, holding the
write lock until the sync returns: the next transaction cannot start, and a
message that arrives during a sync waits for that sync and then its own.
With ``synchronous=NORMAL`` the COMMIT only writes the frames (no sync;
SQLite syncs the WAL before each checkpoint and the WAL header when the log
restarts: sqlite.org/pragma.html#pragma_synchronous, sqlite.org/wal.html).
The transaction is then committed but not yet durable: it survives the
process being killed (the frames are in the kernel's page cache) but not a
power cut or a kernel crash.

The store therefore commits with NORMAL and this thread makes commits
durable: it fdatasyncs the WAL file (its own descriptor of it), which is what
FULL's sync does (SQLite's unix VFS syncs the WAL with fdatasync, and pads
nothing on file systems with power-safe overwrite, the default), and
then tells the event loop which commits it covered. Their results (the
acknowledgements, the deliveries, the topic views and the tail) are
published only then: nothing a crash could take back is told to anyone.
The next sync starts as soon as the one under way returns and covers every
commit written before it started (group commit at the sync): requests that
arrive during a sync are committed together when it returns, or earlier in
bursts (store.py COMMIT_EARLY_ITEMS), and wait for one more sync, not for
a whole commit of SQL and sync plus their own.

Recovery after a power cut reads the WAL up to the last commit frame whose
checksums hold (sqlite.org/fileformat2.html, "WAL file format"); every frame
of a commit reported here was on disk when fdatasync returned. A checkpoint
copies frames into the database only after syncing the WAL (and syncs the
database before the log restarts), so a later restart overwriting the WAL
never loses a reported commit.

A sync that fails (EIO, ENOSPC on some file systems) leaves the page cache's
state of the file unknown (Linux marks the pages clean: a later sync can
succeed without writing them), so after one failure every commit is reported
as failed until the proxy restarts and SQLite recovers from what is on disk.
"""
import logging
import os
import struct
import threading

log = logging.getLogger("upsycle.proxy.store")

# The wal-index (the -shm file, sqlite.org/walformat.html section 2.1, in
# native byte order): mxFrame, the last valid frame of the WAL, at byte 16
# of the header; nBackfill, the frames a checkpoint copied, at byte 96.
_SHM_MXFRAME = struct.Struct("=I")
_SHM_MXFRAME_AT = 16
_SHM_NBACKFILL_AT = 96
_SHM_READ = 100


class WalSync:
    """Syncs the WAL file after commits; on_synced(n, error) runs in the
    event loop with the number of the last commit covered (error: None, or
    why the sync failed)."""

    def __init__(self, wal_path, loop, on_synced):
        # Opened once and closed only after SQLite's connections: closing
        # any descriptor of a file drops the process's POSIX locks on it.
        # (SQLite keeps none on the WAL in this mode, but none are dropped.)
        self.fd = os.open(wal_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._shm = os.open(wal_path[:-len("-wal")] + "-shm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._loop = loop
        self._on_synced = on_synced
        self._cv = threading.Condition()
        self.committed = 0    # number of the last commit written to the WAL
        self.synced = 0       # number of the last commit known durable
        self.syncs = 0
        self.error = None     # the first failure (sticky, see above)
        self._closing = False
        self._thread = None
        self.fsync = os.fdatasync   # what a sync is (tests wrap it to watch the order)

    def header_sync_due(self):
        """Will the next commit write the WAL header and sync it inside the
        COMMIT (SQLite does so even with NORMAL)? It does when every frame
        of the WAL is checkpointed (mxFrame == nBackfill: the log restarts,
        or is empty). The store runs such a commit in its writer thread,
        not in the event loop. A checkpoint finishing between this look and
        the commit still makes one commit in the loop sync: rare, and one
        sync. (Unreadable: say due, the writer thread is always safe.)"""
        try:
            b = os.pread(self._shm, _SHM_READ, 0)
        except OSError:
            return True
        if len(b) < _SHM_READ:
            return True
        return _SHM_MXFRAME.unpack_from(b, _SHM_MXFRAME_AT)[0] == _SHM_MXFRAME.unpack_from(b, _SHM_NBACKFILL_AT)[0]

    def start(self):
        self._thread = threading.Thread(target=self._run, name="upsycle-walsync", daemon=True)
        self._thread.start()

    def busy(self):
        """A sync is running or due (some commit is not yet covered)."""
        return self.committed != self.synced

    def note(self, n):
        """Commit n is written to the WAL (called in commit order)."""
        with self._cv:
            self.committed = n
            self._cv.notify()

    def _run(self):
        while True:
            with self._cv:
                while self.committed == self.synced and not self._closing:
                    self._cv.wait()
                if self.committed == self.synced:
                    return   # closing, everything synced
                target = self.committed
            if self.error is None:
                try:
                    self.fsync(self.fd)
                except OSError as e:
                    self.error = "WAL sync failed: %s" % e
                    log.error("event=wal_sync_failed error=%r (every publish is refused until the proxy restarts)",
                              str(e))
            self.syncs += 1
            with self._cv:
                self.synced = target
            try:
                self._loop.call_soon_threadsafe(self._on_synced, target, self.error)
            except RuntimeError:
                return   # the loop is closed: nobody is waiting

    def stop(self):
        """Sync what is committed and stop the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def close_fd(self):
        """After SQLite's connections are closed (see __init__)."""
        for fd in (self.fd, self._shm):
            try:
                os.close(fd)
            except OSError:
                pass
