// The virtual board's flash: the VM's in-memory filesystem, loaded from a
// host directory at boot and mirrored back to it after every command, so
// files survive resets and restarts and tests can read them on the host.
//
// The VM's own directories (/dev, /proc, and /vboard, which holds the
// virtual board's runtime) are not part of the flash.
import fs from "node:fs";
import path from "node:path";

const NOT_FLASH = new Set(["dev", "proc", "vboard"]);
// A littlefs block: used space is counted in whole blocks, as statvfs does.
const BLOCK = 4096;

export class FlashMirror {
  constructor(FS, dir) {
    this.FS = FS;
    this.dir = path.resolve(dir);
    // What the host directory holds as far as we know: rel path -> Buffer | "dir".
    this.snapshot = new Map();
  }

  load() {
    fs.mkdirSync(this.dir, { recursive: true });
    const walk = (hostDir, vmDir) => {
      for (const ent of fs.readdirSync(hostDir, { withFileTypes: true })) {
        if (vmDir === "" && NOT_FLASH.has(ent.name)) continue;
        if (ent.name.startsWith(".vboard-")) continue; // our temp files
        const h = path.join(hostDir, ent.name), v = vmDir + "/" + ent.name;
        if (ent.isDirectory()) {
          try { this.FS.mkdir(v); } catch (e) { /* exists */ }
          this.snapshot.set(v, "dir");
          walk(h, v);
        } else if (ent.isFile()) {
          const data = fs.readFileSync(h);
          this.FS.writeFile(v, data);
          this.snapshot.set(v, data);
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

  // Mirror the VM's flash to the host directory. Files are written to a
  // temp name and renamed, so a reader on the host never sees half a file.
  sync() {
    const now = this.current();
    const hostPath = (v) => path.join(this.dir, ...v.split("/").filter(Boolean));
    // Removals first, deepest paths first.
    const gone = [...this.snapshot.keys()].filter((k) => !now.has(k) || (now.get(k) === "dir") !== (this.snapshot.get(k) === "dir"));
    gone.sort((a, b) => b.length - a.length);
    for (const k of gone) {
      try { fs.rmSync(hostPath(k), { recursive: true, force: true }); } catch (e) { /* already gone */ }
      this.snapshot.delete(k);
    }
    const keys = [...now.keys()].sort((a, b) => a.length - b.length);
    for (const k of keys) {
      const v = now.get(k), old = this.snapshot.get(k);
      if (v === "dir") {
        if (old !== "dir") fs.mkdirSync(hostPath(k), { recursive: true });
      } else if (!(old instanceof Buffer) || !old.equals(v)) {
        const p = hostPath(k);
        const tmp = path.join(path.dirname(p), ".vboard-" + process.pid + "-" + path.basename(p));
        fs.writeFileSync(tmp, v);
        fs.renameSync(tmp, p);
      }
      this.snapshot.set(k, v);
    }
  }
}
