"""The proxy's data directory: one proxy at a time, private files, and a
record of what it held.

- **Lock.** ``lock`` holds an exclusive ``flock`` on ``<data>/lock`` for the
  life of the process (the kernel drops it when the process dies, SIGKILL
  too, so a crash never leaves a stale lock). A second proxy on the same
  directory would store the same topics under its own sequence numbers and
  acknowledge messages the other then drops as duplicates; it stops at start
  instead (exit 3, naming the process that holds the lock).
- **Modes.** The directory is 0700 and every file in it 0600: stored payloads
  are plaintext for public topics, and the proxy key is its identity. SQLite
  creates the ``-wal`` and ``-shm`` files with the mode of the database file,
  so creating that one 0600 first covers them.
- **Clean close.** ``write_clean`` records, after the store closed its
  database cleanly (every page checkpointed into the file, no WAL left), the
  file's identity, size and modification time in ``<data>/store_clean``;
  ``take_clean`` reads and removes it at the next start. If the file is
  still exactly as this proxy left it, start-up skips the integrity scan of
  every page (the larger part of starting on a big store); after a crash, a
  copy, a restore or any write by anything else, the scan runs.
- **Marker.** ``store_marker`` records the proxy id of the database the
  directory holds (written once the database exists). At start a missing,
  empty or foreign database beside a marker (or beside a proxy key: a proxy
  ran here) is refused, never silently replaced by an empty one.
"""
import errno
import fcntl
import os

LOCK_FILE = "lock"
MARKER_FILE = "store_marker"
CLEAN_FILE = "store_clean"
DIR_MODE = 0o700
FILE_MODE = 0o600
# What a marker file may hold (one line: "upsycle-store <hex proxy id>").
MARKER_MAX = 256
MARKER_TAG = "upsycle-store"


class DataDirError(Exception):
    """The directory cannot be used (the caller turns it into StorageError)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def make_private(path):
    """Create the directory 0700 (or tighten an existing one)."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    if os.stat(path).st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)


def private_file(path):
    """Create path (empty) 0600 if missing; tighten it if it exists."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def tighten(path):
    """0600 on an existing file (the WAL and SHM of an older data dir)."""
    try:
        if os.stat(path).st_mode & 0o777 != FILE_MODE:
            os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def lock(data_dir):
    """Take the directory's exclusive lock; return the open fd (keep it open
    while the proxy runs). Raises DataDirError("locked") naming the holder."""
    path = os.path.join(data_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = ""
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            pass
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise DataDirError("locked", "data directory %s is in use by another proxy%s; run one proxy "
                               "per data directory" % (data_dir, " (pid %s)" % holder if holder else ""))
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd


def unlock(fd):
    if fd is not None:
        try:
            os.close(fd)   # closing the descriptor releases the flock
        except OSError:
            pass


def _read_small(path):
    """The first MARKER_MAX bytes of a small file we write, or None without it."""
    try:
        with open(path, "rb") as f:
            return f.read(MARKER_MAX)
    except FileNotFoundError:
        return None


def read_marker(data_dir):
    """The proxy id (bytes) the marker records, or None without a marker."""
    path = os.path.join(data_dir, MARKER_FILE)
    raw = _read_small(path)
    if raw is None:
        return None
    parts = raw.decode("ascii", "replace").split()
    if len(parts) == 2 and parts[0] == MARKER_TAG:
        try:
            return bytes.fromhex(parts[1])
        except ValueError:
            pass
    raise DataDirError("marker", "%s is damaged; it should read '%s <proxy id>' (the id is in the database's "
                       "meta table)" % (path, MARKER_TAG))


def write_marker(data_dir, proxy_id):
    """Record the database's proxy id (written, synced, renamed)."""
    path = os.path.join(data_dir, MARKER_FILE)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write("%s %s\n" % (MARKER_TAG, bytes(proxy_id).hex()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def file_stamp(path):
    """What changes whenever anything writes or replaces the file."""
    st = os.stat(path)
    return "%d %d %d %d" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def write_clean(data_dir, stamp):
    """Record a clean close (written, synced, renamed)."""
    path = os.path.join(data_dir, CLEAN_FILE)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(stamp + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(data_dir)


def take_clean(data_dir):
    """The stamp of the last clean close, or None; removed (and the removal
    synced) before the database is written, so a crash from here on leaves
    none behind."""
    path = os.path.join(data_dir, CLEAN_FILE)
    raw = _read_small(path)
    if raw is None:
        return None
    os.remove(path)
    _sync_dir(data_dir)
    return raw.decode("ascii", "replace").strip()


def _sync_dir(data_dir):
    dfd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
