// One boot of the virtual board: a MicroPython 1.27 VM with the board's
// files, speaking MicroPython's REPL protocols on stdin/stdout.
//
// Started by server.mjs (one process per boot: a soft or hard reset ends this
// process and the server boots a fresh one, so no timer of an old VM can
// reach a new one). Control messages go to the server over the IPC channel:
//   {t: "reset", kind: "soft"|"hard"|"deepsleep", mode, delay, leftover}
//   {t: "alive"}                 answer to a Ctrl-C, proves the VM is not blocked
//   {t: "wdt", timeout} / {t: "feed"}  the watchdog (kept by the server)
//   {t: "pin", id, value}        LED and other output pins, for the console
//
// REPL protocols (MicroPython's shared/runtime/pyexec.c behaviour, re-done in
// JS because the VM's own raw-paste mode blocks on stdin):
//   friendly REPL  the VM's native event-driven REPL (replProcessChar); we
//                  take Ctrl-A (raw REPL) and Ctrl-C while an app runs.
//   raw REPL       Ctrl-A: "raw REPL; CTRL-B to exit\r\n>"; code then Ctrl-D
//                  -> "OK" stdout "\x04" error "\x04" ">"; Ctrl-D on an empty
//                  buffer soft-resets; Ctrl-B back to the friendly REPL.
//   raw-paste      "\x05A\x01" at a raw prompt -> "R\x01" + window (u16 LE);
//                  we send "\x01" each time a window of bytes is consumed;
//                  "\x04" ends the data, we answer "\x04" then run it as above.
import crypto from "node:crypto";
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import url from "node:url";

import { FlashMirror } from "./flash.mjs";

const here = path.dirname(url.fileURLToPath(import.meta.url));
// argv[2]: the VM heap in bytes. The server starts this process ahead of
// time as a spare (Node and the VM take ~0.5 s to load) and sends
//   {t: "boot", opts: {fs, name, boot: power|hard|soft|wdt|deepsleep|safe,
//    mode: friendly|raw, cause: machine.reset_cause() value, wifi: [[ssid, key]...]}}
// when the board resets, so a reset costs only the boot itself.
const heap = parseInt(process.argv[2], 10) || 2 * 1024 * 1024;

// Raw-paste flow-control window: the host may send this many bytes before
// waiting for our "\x01". Boards use 128-512 (their UART buffer); the VM has
// no such buffer, and a larger window saves round trips.
const PASTE_WINDOW = 4096;
// Datagrams queued per UDP socket before new ones are dropped, like lwIP's
// receive mailbox on an ESP32 (which is 6-32 deep depending on the build).
const UDP_QUEUE_MAX = 32;
// Largest datagram the bridge accepts from board code (UDP over IPv4).
const UDP_MAX = 65507;
// Bytes received on a TCP connection and not yet read by board code, before
// Node stops reading from the peer (TCP flow control then slows the peer),
// about what an ESP32's lwIP receive window holds.
const TCP_RX_MAX = 16 * 1024;

const CTRL_A = 1, CTRL_B = 2, CTRL_C = 3, CTRL_D = 4, CTRL_E = 5;

// ---------------------------------------------------------------- output
let outParts = [];
let outScheduled = false;
function flushOut() {
  outScheduled = false;
  if (outParts.length) {
    process.stdout.write(Buffer.concat(outParts));
    outParts = [];
  }
}
function emit(data) {
  outParts.push(typeof data === "string" ? Buffer.from(data, "latin1") : Buffer.from(data));
  if (!outScheduled) { outScheduled = true; setImmediate(flushOut); }
}
// VM output is "cooked" like a board's UART: "\n" becomes "\r\n".
let lastByte = 0;
function emitCooked(bytes) {
  const out = [];
  for (const b of bytes) {
    if (b === 10 && lastByte !== 13) out.push(13);
    out.push(b);
    lastByte = b;
  }
  emit(Buffer.from(out));
}
function emitText(s) { emitCooked(Buffer.from(s, "utf8")); }

// ---------------------------------------------------------------- VM
// argv[3]: the VM's micropython.mjs (the npm package pinned by
// ../mpvm/package-lock.json; upsycle/vm.py finds or installs it).
const { loadMicroPython } = await import(url.pathToFileURL(process.argv[3]).href);
const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (b) => emitCooked(b),
  stderr: (b) => emitCooked(b),
  linebuffer: false,
});
const opts = await new Promise((resolve) => process.once("message", (m) => resolve(m.opts)));
const FS = mp.FS;
for (const d of ["/home/web_user", "/home", "/tmp"]) {
  try { FS.rmdir(d); } catch (e) { /* not empty or absent: leave it */ }
}
const flash = new FlashMirror(FS, opts.fs);
flash.load();

// Runtime modules live in /vboard (hidden from listings, never mirrored).
FS.mkdirTree("/vboard");
for (const f of fs.readdirSync(path.join(here, "py"))) {
  if (f.endsWith(".py")) FS.writeFile("/vboard/" + f, fs.readFileSync(path.join(here, "py", f)));
}
// From here on, board code's file commits are written through to the host.
flash.hook();

let appRunning = false;
let appDoneCb = null;
let resetRequest = null;
let wdtArmed = false;
const sockets = new Map();
const ble = { sock: null, cb: null };
let nextSock = 1;

function uniqueId() {
  return crypto.createHash("sha256").update("upsycle-vboard:" + opts.name).digest("hex").slice(0, 12);
}

// Internal temperature sensor on ADC channel 4, RP2040 formula
// (datasheet §4.9.5: T = 27 - (V - 0.706) / 0.001721): ~22 C with a slow
// daily-like swing and a little noise.
function adcRead(ch) {
  const t = Date.now() / 1000;
  if (ch === 4) {
    const temp = 22 + 2 * Math.sin(t / 600) + (Math.random() - 0.5) * 0.4;
    const v = 0.706 - (temp - 27) * 0.001721;
    return Math.max(0, Math.min(65535, Math.round(v / 3.3 * 65535)));
  }
  return Math.round(32768 + 8000 * Math.sin(t / 60 + ch));
}

function sockOf(id) {
  const s = sockets.get(id);
  if (!s) throw new Error("bad socket");
  return s;
}

mp.registerJsModule("_vboard_js", {
  boardName: () => opts.name,
  uniqueId,
  urandom: (n) => crypto.randomBytes(n).toString("hex"),
  resetCause: () => opts.cause,
  usedBytes: () => flash.usedBytes(),
  requestReset: (kind, delay) => { resetRequest = { kind, delay }; },
  appStarted: () => { appRunning = true; },
  appDone: (err) => { appRunning = false; setImmediate(() => onAppDone(err)); },
  wdtStart: (timeout) => { wdtArmed = true; process.send({ t: "wdt", timeout }); },
  wdtFeed: () => { if (wdtArmed) process.send({ t: "feed" }); },
  pinChanged: (id, value) => process.send({ t: "pin", id, value }),
  adcRead,
  wifiJoin: (ssid, key) => {
    const ap = (opts.wifi || []).find((w) => w[0] === ssid);
    if (!ap) return "no_ap";
    return ap[1] === key ? "ok" : "wrong_key";
  },
  wifiNames: () => (opts.wifi || []).map((w) => w[0]).join("\n"),
  udpOpen: () => {
    const id = nextSock++;
    const sock = dgram.createSocket({ type: "udp4", reuseAddr: false });
    const s = { sock, queue: [], err: 0, port: 0, onMessage: null, bound: false };
    sock.on("message", (msg, rinfo) => {
      if (s.queue.length >= UDP_QUEUE_MAX) return;
      s.queue.push(msg.toString("hex") + " " + rinfo.address + " " + rinfo.port);
      if (s.onMessage) s.onMessage();
    });
    sock.on("listening", () => { s.port = sock.address().port; });
    sock.on("error", (e) => { s.err = e.code === "EADDRINUSE" ? 112 : 5; });
    sockets.set(id, s);
    return id;
  },
  sockHasError: (id) => sockOf(id).err !== 0,
  udpError: (id) => { const s = sockOf(id); const e = s.err; s.err = 0; return e; },
  udpBind: (id, host, port) => { const s = sockOf(id); s.bound = true; s.sock.bind(port, host); },
  udpSend: (id, hex, host, port) => {
    const buf = Buffer.from(hex, "hex");
    if (buf.length > UDP_MAX) return -1;
    sockOf(id).sock.send(buf, port, host);
    return buf.length;
  },
  udpRecv: (id, n) => {
    const s = sockOf(id);
    if (!s.queue.length) return null;
    const item = s.queue.shift();
    if (n >= 0) {
      const sp = item.indexOf(" ");
      if (sp > 2 * n) return item.slice(0, 2 * n) + item.slice(sp);
    }
    return item;
  },
  udpPending: (id) => { const s = sockOf(id); return s.tcp ? (s.size > 0 || s.eof ? 1 : 0) : s.queue.length; },
  udpPort: (id) => sockOf(id).port,
  udpOnMessage: (id, cb) => { sockOf(id).onMessage = cb; },
  tcpConnect: (host, port) => {
    const id = nextSock++;
    const s = { tcp: true, chunks: [], size: 0, eof: false, err: 0, onMessage: null };
    const sock = net.connect({ host, port });
    s.sock = sock;
    sock.setNoDelay(true);
    sock.on("data", (d) => {
      s.chunks.push(d);
      s.size += d.length;
      if (s.size >= TCP_RX_MAX) sock.pause();
      if (s.onMessage) s.onMessage();
    });
    sock.on("end", () => { s.eof = true; if (s.onMessage) s.onMessage(); });
    sock.on("error", (e) => {
      // MicroPython errno numbers: ECONNREFUSED 111, ECONNRESET 104, EHOSTUNREACH 113.
      s.err = { ECONNREFUSED: 111, ECONNRESET: 104, EHOSTUNREACH: 113, ETIMEDOUT: 110 }[e.code] || 5;
      s.eof = true;
      if (s.onMessage) s.onMessage();
    });
    sockets.set(id, s);
    return id;
  },
  tcpSend: (id, hex) => { const buf = Buffer.from(hex, "hex"); sockOf(id).sock.write(buf); return buf.length; },
  // Up to n bytes as hex; null: nothing yet (EAGAIN); "": the peer closed.
  tcpRecv: (id, n) => {
    const s = sockOf(id);
    if (!s.size) return s.eof ? "" : null;
    const all = Buffer.concat(s.chunks);
    const take = all.subarray(0, Math.max(0, n));
    const rest = all.subarray(take.length);
    s.chunks = rest.length ? [Buffer.from(rest)] : [];
    s.size = rest.length;
    if (s.size < TCP_RX_MAX) s.sock.resume();
    return take.toString("hex");
  },
  tcpReadable: (id) => { const s = sockOf(id); return s.size > 0 || s.eof; },
  // The radio: one TCP connection to the virtual BLE medium (--ble
  // HOST:PORT, host/upsycle/ble/medium.py), JSON lines both ways; each line
  // from the medium goes to bluetooth.py's handler. Without a medium the
  // radio is silent.
  bleOpen: (cb) => {
    ble.cb = cb;
    if (ble.sock || !opts.ble) return !!opts.ble;
    const k = opts.ble.lastIndexOf(":");
    const sock = net.connect({ host: opts.ble.slice(0, k), port: parseInt(opts.ble.slice(k + 1), 10) });
    sock.setNoDelay(true);
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString("latin1");
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (ble.cb && ble.sock === sock) ble.cb(line);
      }
    });
    sock.on("error", () => {});
    ble.sock = sock;
    return true;
  },
  bleSend: (line) => { if (ble.sock) ble.sock.write(line + "\n"); },
  bleClose: () => { if (ble.sock) { ble.sock.destroy(); ble.sock = null; } },
  bleGroup: () => opts.bleGroup || "default",
  udpClose: (id) => {
    const s = sockets.get(id);
    if (s) {
      sockets.delete(id);
      try { if (s.tcp) s.sock.destroy(); else s.sock.close(); } catch (e) { /* already closed */ }
    }
  },
});

mp.runPython("import sys\nsys.path.insert(0, '/vboard')\nsys.path.append('/lib')\n" +
  "import _vboard\n_vboard.init(globals())\nimport machine, network, socket, vboard, bluetooth\n" +
  "sys.path.remove('/vboard')\ndel sys\n");
const vb = mp.pyimport("_vboard");

// ---------------------------------------------------------------- resets
let state = "boot";
let halted = false;
const input = [];

function doReset(kind, mode, delay) {
  if (halted) return;
  halted = true;
  if (kind === "soft") flash.commitOpenFiles();
  flushOut();
  const leftover = input.splice(0);
  process.send({ t: "reset", kind, mode, delay: delay || 0, leftover }, () => {
    process.stdout.write("", () => process.exit(0));
  });
}

// After any Python call: honour machine.reset()/soft_reset()/deepsleep().
function checkReset(mode) {
  if (resetRequest) {
    const r = resetRequest;
    resetRequest = null;
    doReset(r.kind, r.kind === "soft" ? mode : "friendly", r.delay);
    return true;
  }
  return false;
}

// ---------------------------------------------------------------- running code
function execSource(src, filename) {
  const r = vb.exec_source(src, filename);
  return r === null || r === undefined ? "" : r;
}

function friendlyBanner() {
  // The VM's own banner and prompt ("MicroPython v1.27.0 ...\r\n>>> ").
  mp.replInit();
  state = "friendly";
}

function finishRaw(err) {
  emit("\x04");
  if (err) emitText(err);
  emit("\x04>");
  state = "raw";
}

function runRaw(src) {
  const err = execSource(src, "<stdin>");
  if (checkReset("raw")) return;
  if (err === "EXIT") { doReset("soft", "raw"); return; }
  if (vb.app_running()) {
    // asyncio.run() in a raw-REPL command: answer when the app ends, so
    // `mpremote run app.py` follows its output as on a board.
    state = "raw-app";
    appDoneCb = (e) => {
      if (checkReset("raw")) return;
      if (e === "EXIT") { doReset("soft", "raw"); return; }
      finishRaw(err + e);
      pump();
    };
    return;
  }
  finishRaw(err);
}

// ---------------------------------------------------------------- input
let rawLine = [];
let paste = null;

function handleByte(c) {
  switch (state) {
    case "friendly": {
      if (c === CTRL_A) {
        emit("\r\nraw REPL; CTRL-B to exit\r\n>");
        state = "raw";
        rawLine = [];
        return;
      }
      if (c === CTRL_C && appRunning) { vb.interrupt(); return; }
      const r = mp.replProcessChar(c);
      if (checkReset("friendly")) return;
      if (r & 0x100) { doReset("soft", "friendly"); return; }
      return;
    }
    case "app": // an app runs (asyncio.run): only Ctrl-C means anything
    case "raw-app":
      if (c === CTRL_C) {
        // Cancel it; the input after the Ctrl-C waits until it has ended.
        state = state === "app" ? "app-stopping" : "raw-app-stopping";
        vb.interrupt();
      }
      return;
    case "raw": {
      if (c === CTRL_A) {
        if (rawLine.length === 2 && rawLine[0] === CTRL_E && rawLine[1] === 0x41) {
          const w = Buffer.from([0x52, 0x01, PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8]);
          emit(w);
          paste = { data: [], left: PASTE_WINDOW };
          rawLine = [];
          state = "paste";
          return;
        }
        emit("raw REPL; CTRL-B to exit\r\n>");
        rawLine = [];
        return;
      }
      if (c === CTRL_B) {
        emit("\r\n");
        friendlyBanner();
        return;
      }
      if (c === CTRL_C) { rawLine = []; return; }
      if (c === CTRL_D) {
        emit("OK");
        const src = Buffer.from(rawLine).toString("utf8");
        rawLine = [];
        if (src.length === 0) { emit("\r\n"); doReset("soft", "raw"); return; }
        runRaw(src);
        return;
      }
      rawLine.push(c);
      return;
    }
    case "paste": {
      if (c === CTRL_D) {
        emit("\x04");
        const src = Buffer.from(paste.data).toString("utf8");
        paste = null;
        runRaw(src);
        return;
      }
      paste.data.push(c);
      if (--paste.left === 0) { paste.left = PASTE_WINDOW; emit("\x01"); }
      return;
    }
    default:
      input.unshift(c); // not ready yet: keep it
  }
}

function pump() {
  while (input.length && !halted && state !== "boot" && !state.endsWith("-stopping")) {
    const c = input.shift();
    handleByte(c);
  }
}

process.stdin.on("data", (chunk) => {
  for (const c of chunk) input.push(c);
  if (chunk.includes(CTRL_C)) process.send({ t: "alive" });
  pump();
});
// The server went away (stopped or killed): the power is off. What was
// committed is on the host already (flash.mjs); unclosed writes are lost.
process.stdin.on("end", () => { flushOut(); process.exit(0); });
process.on("disconnect", () => { process.exit(0); });

// An app started from a friendly-REPL line runs in the background (the
// prompt is already shown); its error, if any, is printed when it ends.
function onAppDone(err) {
  if (halted) return;
  if (appDoneCb) { const cb = appDoneCb; appDoneCb = null; cb(err); return; }
  if (checkReset("friendly")) return;
  if (err === "EXIT") { doReset("soft", state === "friendly" ? "friendly" : "raw"); return; }
  if (err) emitText(err);
}

// While the app of main.py (or of a REPL line) runs, the REPL is not shown;
// when it ends or Ctrl-C cancels it, print its error and show the REPL.
function watchApp(mode) {
  state = "app";
  appDoneCb = (err) => {
    if (checkReset(mode)) return;
    if (err === "EXIT") { doReset("soft", mode); return; }
    if (err) emitText(err);
    friendlyBanner();
    pump();
  };
}

// ---------------------------------------------------------------- boot
if (opts.boot === "soft") emit("MPY: soft reboot\r\n");
if (opts.boot === "safe") {
  emitText("\nvirtual board: the VM was blocked and did not answer Ctrl-C (a busy loop or time.sleep?)\n" +
    "It was restarted without running boot.py and main.py.\n");
}

function boot() {
  if (opts.boot !== "safe") {
    const r = vb.exec_file("boot.py");
    if (checkReset(opts.mode)) return;
    if (r === "EXIT") { doReset("soft", opts.mode); return; }
  }
  if (opts.mode === "raw") {
    emit("raw REPL; CTRL-B to exit\r\n>");
    state = "raw";
    return;
  }
  if (opts.boot !== "safe") {
    const r = vb.exec_file("main.py");
    if (checkReset("friendly")) return;
    if (r === "EXIT") { doReset("soft", "friendly"); return; }
    if (vb.app_running()) { watchApp("friendly"); return; }
  }
  friendlyBanner();
}
boot();
pump();
