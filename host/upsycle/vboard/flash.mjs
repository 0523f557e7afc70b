// The virtual board's flash: the VM's in-memory filesystem, loaded from a
// host directory at boot and written through to it at the moments littlefs
// commits on a real board, so that a power cut (SIGKILL of the board
// process) leaves the host directory as littlefs would leave the chip:
//
//   open(O_CREAT) of a new file   the entry exists, empty (littlefs commits
//                                 the name at open: lfs_file_opencfg)
//   close / flush (fsync)         the file's whole content (lfs_file_sync)
//   rename, remove, mkdir, rmdir  the same operation on the host (each is
//                                 one atomic metadata commit in littlefs)
//
// Writes to a file not yet closed or flushed never reach the host: after a
// cut the file has its last committed content (or is empty if it was new).
// A file's content goes to the host through a temp file and a rename, so
// the host copy is always whole, whatever instant the process dies.
//
// The VM's own directories (/dev, /proc, and /vboard, which holds the
// virtual board's runtime) are not part of the flash.
import fs from "node:fs";
import path from "node:path";

const NOT_FLASH = new Set(["dev", "proc", "vboard"]);
// A littlefs block: used space is counted in whole blocks, as statvfs does.
const BLOCK = 4096;
// Emscripten's open(2) flags (musl's numbering).
const O_ACCMODE = 3;
const O_CREAT = 64;
// Temp files on the host start with this; load() ignores and removes them
// (a cut between writing one and renaming it leaves it behind).
const TMP_PREFIX = ".vboard-";
// fopen-style mode strings (Emscripten's FS accepts them too; its own
// readFile/writeFile use them).
const MODE_FLAGS = { r: 0, "r+": 2, w: 577, "w+": 578, a: 1089, "a+": 1090 };

export class FlashMirror {
  constructor(FS, dir) {
    this.FS = FS;
    this.dir = path.resolve(dir);
    this.writes = 0;   // host files written (for tests and benchmarks)
  }

  load() {
    fs.mkdirSync(this.dir, { recursive: true });
    const walk = (hostDir, vmDir) => {
      for (const ent of fs.readdirSync(hostDir, { withFileTypes: true })) {
        if (vmDir === "" && NOT_FLASH.has(ent.name)) continue;
        const h = path.join(hostDir, ent.name), v = vmDir + "/" + ent.name;
        if (ent.name.startsWith(TMP_PREFIX)) {
          try { fs.rmSync(h, { force: true }); } catch (e) { /* gone */ }
          continue;
        }
        if (ent.isDirectory()) {
          try { this.FS.mkdir(v); } catch (e) { /* exists */ }
          walk(h, v);
        } else if (ent.isFile()) {
          this.FS.writeFile(v, fs.readFileSync(h));
        }
      }
    };
    walk(this.dir, "");
  }

  // The flash as it is now in the VM: rel path -> Buffer | "dir".
  current() {
    const FS = this.FS, out = new Map();
    const walk = (vmDir) => {
      for (const name of FS.readdir(vmDir === "" ? "/" : vmDir)) {
        if (name === "." || name === "..") continue;
        if (vmDir === "" && NOT_FLASH.has(name)) continue;
        const v = vmDir + "/" + name;
        const st = FS.stat(v);
        if (FS.isDir(st.mode)) { out.set(v, "dir"); walk(v); }
        else if (FS.isFile(st.mode)) out.set(v, Buffer.from(FS.readFile(v)));
      }
    };
    walk("");
    return out;
  }

  usedBytes() {
    let n = 0;
    for (const v of this.current().values()) n += v === "dir" ? BLOCK : Math.ceil(v.length / BLOCK) * BLOCK;
    return n;
  }

  // -- write-through ------------------------------------------------------

  // A VM path on the flash (absolute, normalised), or null.
  flashPath(p) {
    if (typeof p !== "string") return null;
    const n = path.posix.normalize(p.startsWith("/") ? p : this.FS.cwd() + "/" + p);
    const top = n.split("/")[1];
    if (!top || NOT_FLASH.has(top)) return null;
    return n;
  }

  hostPath(v) {
    return path.join(this.dir, ...v.split("/").filter(Boolean));
  }

  // The VM file `node` as it is now, written to the host whole (temp+rename).
  commitFile(node) {
    const FS = this.FS;
    let v;
    try {
      v = this.flashPath(FS.getPath(node));
      // Removed or replaced since it was opened: nothing of it is on flash.
      if (v === null || FS.lookupPath(v).node !== node) return;
    } catch (e) { return; }
    this.writeHost(v, Buffer.from(FS.readFile(v)));
  }

  writeHost(v, data) {
    const p = this.hostPath(v);
    const tmp = path.join(path.dirname(p), TMP_PREFIX + process.pid + "-" + path.basename(p));
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, p);
    this.writes++;
  }

  // Copy a VM subtree (file or directory) to the host as it is now.
  copyTree(v) {
    const FS = this.FS;
    const st = FS.stat(v);
    if (FS.isDir(st.mode)) {
      fs.mkdirSync(this.hostPath(v), { recursive: true });
      for (const name of FS.readdir(v)) {
        if (name !== "." && name !== "..") this.copyTree(v + "/" + name);
      }
    } else if (FS.isFile(st.mode)) {
      this.writeHost(v, Buffer.from(FS.readFile(v)));
    }
  }

  hostRename(a, b) {
    if (a === null && b === null) return;
    if (b === null) { fs.rmSync(this.hostPath(a), { recursive: true, force: true }); return; }
    if (a !== null) {
      try { fs.renameSync(this.hostPath(a), this.hostPath(b)); return; } catch (e) { /* below */ }
      fs.rmSync(this.hostPath(a), { recursive: true, force: true });
    }
    // The host lacked the source (or it came from outside the flash).
    fs.rmSync(this.hostPath(b), { recursive: true, force: true });
    this.copyTree(b);
  }

  // Soft reset: MicroPython's gc_sweep_all() runs the files' finalisers,
  // which close (so commit) every file still open. A hard reset or a power
  // cut does not: their unflushed writes are lost.
  commitOpenFiles() {
    for (const s of this.FS.streams) {
      if (s && (s.flags & O_ACCMODE) !== 0 && this.FS.isFile(s.node.mode)) this.commitFile(s.node);
    }
  }

  // Wrap the VM's filesystem calls (the syscalls reach them through the FS
  // object, so wrapping its methods sees every call board code makes).
  // Call after load() and after the runtime's own files are in place.
  hook() {
    const FS = this.FS, self = this;
    const orig = { open: FS.open, close: FS.close, rename: FS.rename, unlink: FS.unlink, mkdir: FS.mkdir, rmdir: FS.rmdir };
    let syncPatched = false;
    FS.open = function (p, flags, mode) {
      const f = typeof flags === "string" ? (MODE_FLAGS[flags] || 0) : flags;
      const v = (f & O_CREAT) ? self.flashPath(p) : null;
      let isNew = false;
      if (v !== null) {
        try { FS.lookupPath(v, { follow: true }); } catch (e) { isNew = true; }
      }
      const stream = orig.open.call(FS, p, flags, mode);
      if (!syncPatched && FS.isFile(stream.node.mode) && stream.stream_ops) {
        // flush(): MicroPython's file flush calls fsync (extmod/vfs_posix_file.c);
        // MEMFS has none. Its stream ops are shared by every MEMFS file.
        syncPatched = true;
        stream.stream_ops.fsync = (s) => {
          if ((s.flags & O_ACCMODE) !== 0) self.commitFile(s.node);
          return 0;
        };
      }
      if (isNew) self.commitFile(stream.node);
      return stream;
    };
    FS.close = function (stream) {
      const writable = (stream.flags & O_ACCMODE) !== 0 && stream.node && FS.isFile(stream.node.mode);
      const r = orig.close.call(FS, stream);
      if (writable) self.commitFile(stream.node);
      return r;
    };
    FS.rename = function (a, b) {
      const r = orig.rename.call(FS, a, b);
      self.hostRename(self.flashPath(a), self.flashPath(b));
      return r;
    };
    FS.unlink = function (p) {
      const r = orig.unlink.call(FS, p);
      const v = self.flashPath(p);
      if (v !== null) fs.rmSync(self.hostPath(v), { force: true });
      return r;
    };
    FS.rmdir = function (p) {
      const r = orig.rmdir.call(FS, p);
      const v = self.flashPath(p);
      if (v !== null) fs.rmSync(self.hostPath(v), { recursive: true, force: true });
      return r;
    };
    FS.mkdir = function (p, mode) {
      const r = orig.mkdir.call(FS, p, mode);
      const v = self.flashPath(p);
      if (v !== null) fs.mkdirSync(self.hostPath(v), { recursive: true });
      return r;
    };
  }
}
