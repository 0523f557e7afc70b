// The virtual board: a MicroPython 1.27 board behind a TCP port on loopback,
// driven like a serial board by mpremote (`mpremote connect socket://127.0.0.1:PORT`).
//
// usage: node server.mjs --fs DIR --vm MICROPYTHON.mjs [--port PORT] [--name NAME]
//                        [--wifi SSID:PASS]... [--echo] [--heap BYTES]
//                        [--ble HOST:PORT [--ble-group NAME]]  (the virtual BLE medium)
// (--vm: the VM's micropython.mjs; `upsycle board virtual` passes it.)
//
// This process is the board's "UART and power supply": it owns the TCP port
// and the watchdog, and runs each boot of the board as a child process
// (board.mjs). A reset ends the child and starts a fresh one, so the TCP
// connection survives resets as a USB serial link does. If the VM is blocked
// (a busy loop, time.sleep) and does not answer a Ctrl-C, the child is killed
// and the board restarts without running boot.py/main.py. Prints
// "socket://127.0.0.1:PORT" on stdout once it listens.
import { fork } from "node:child_process";
import net from "node:net";
import path from "node:path";
import url from "node:url";

const here = path.dirname(url.fileURLToPath(import.meta.url));

// How long a Ctrl-C may go unanswered before the VM counts as blocked. The
// VM answers within milliseconds when idle; long enough for a slow command.
const INTERRUPT_GRACE_MS = 1500;

function parseArgs(argv) {
  const o = { port: 0, name: "vboard", fs: null, vm: null, wifi: [], echo: false, heap: 2 * 1024 * 1024 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port") o.port = parseInt(argv[++i], 10);
    else if (a === "--fs") o.fs = argv[++i];
    else if (a === "--vm") o.vm = argv[++i];
    else if (a === "--name") o.name = argv[++i];
    else if (a === "--wifi") {
      const s = argv[++i], k = s.indexOf(":");
      if (k < 1) throw new Error("--wifi wants SSID:PASSWORD");
      o.wifi.push([s.slice(0, k), s.slice(k + 1)]);
    } else if (a === "--echo") o.echo = true;
    else if (a === "--heap") o.heap = parseInt(argv[++i], 10);
    else if (a === "--ble") o.ble = argv[++i];
    else if (a === "--ble-group") o.bleGroup = argv[++i];
    else throw new Error("unknown argument " + a);
  }
  if (!o.fs) throw new Error("--fs DIR is required (the board's flash on the host)");
  if (!o.vm) throw new Error("--vm FILE is required (the MicroPython VM's micropython.mjs)");
  if (!o.wifi.length) o.wifi.push(["upsycle-lab", "upsycle-lab"]);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
let client = null;       // the connected socket, if any
let child = null;        // the running boot of the board
let pending = [];        // input that arrived while no child was ready
let wdt = null;          // {timeout, timer}: survives soft resets, like on hardware
let interruptTimer = null;
let sinceInterrupt = []; // input after an unanswered Ctrl-C: replayed if the VM is killed
let stopping = false;
// machine.reset_cause() as on an ESP32: the cause of the last reset of the
// chip. A MicroPython soft reboot does not reset the chip, so it keeps it.
const CAUSE = { power: 1, safe: 2, wdt: 3, deepsleep: 4, hard: 5 };
let cause = CAUSE.power;

function log(msg) { process.stderr.write("[vboard " + opts.name + "] " + msg + "\n"); }

function toClient(buf) {
  if (client && !client.destroyed) client.write(buf);
  if (opts.echo) process.stdout.write(buf);
}

function armWdt() {
  if (!wdt) return;
  clearTimeout(wdt.timer);
  wdt.timer = setTimeout(() => {
    log("watchdog expired: reset");
    restart("wdt", "friendly", 0, true);
  }, wdt.timeout);
}

// A board process loaded ahead of time, waiting for its boot message.
let spare = null;
function forkSpare() {
  const c = fork(path.join(here, "board.mjs"), [String(opts.heap), opts.vm], { stdio: ["pipe", "pipe", "pipe", "ipc"] });
  c.on("error", () => {});
  c.stderr.on("data", (d) => process.stderr.write(d));
  return c;
}
function refillSpare() {
  if (!spare && !stopping) spare = forkSpare();
}

function start(boot, mode) {
  if (boot in CAUSE) cause = CAUSE[boot];
  const cfg = { fs: opts.fs, name: opts.name, boot, mode, cause, wifi: opts.wifi, ble: opts.ble, bleGroup: opts.bleGroup };
  let c = spare;
  spare = null;
  if (!c || c.exitCode !== null || c.signalCode !== null) c = forkSpare();
  c.send({ t: "boot", opts: cfg });
  // The next spare loads while this boot runs (Node's start-up is the slow part).
  setTimeout(refillSpare, 200);
  child = c;
  c.resetMsg = null;
  c.stdout.on("data", (d) => { if (child === c) toClient(d); });
  c.on("message", (m) => {
    if (m.t === "reset") c.resetMsg = m;
    else if (m.t === "alive") { clearTimeout(interruptTimer); interruptTimer = null; sinceInterrupt = []; }
    else if (m.t === "wdt") { if (!wdt) wdt = { timeout: m.timeout, timer: null }; armWdt(); }
    else if (m.t === "feed") armWdt();
    else if (m.t === "pin") log("pin " + m.id + " = " + m.value);
  });
  c.on("close", (code, signal) => {
    if (child !== c || stopping) return;
    child = null;
    const m = c.resetMsg;
    if (m) {
      pending = m.leftover.concat(pending);
      // A chip reset stops the watchdog; a soft reboot does not.
      if (m.kind !== "soft" && wdt) { clearTimeout(wdt.timer); wdt = null; }
      if (m.kind === "deepsleep") {
        setTimeout(() => start("deepsleep", "friendly"), m.delay);
        return;
      }
      start(m.kind, m.mode);
    } else if (!c.killedOnPurpose) {
      log("board process ended (" + (signal || code) + "): power-cycling");
      start("power", "friendly");
    }
  });
  if (pending.length) { c.stdin.write(Buffer.from(pending)); pending = []; }
}

function restart(boot, mode, _delay, clearWdt) {
  const c = child;
  if (clearWdt && wdt) { clearTimeout(wdt.timer); wdt = null; }
  child = null;
  if (c) { c.killedOnPurpose = true; c.kill("SIGKILL"); }
  start(boot, mode);
}

function toBoard(buf) {
  if (child && child.stdin.writable && !child.resetMsg) {
    child.stdin.write(buf);
    if (interruptTimer) for (const b of buf) sinceInterrupt.push(b);
    else if (buf.includes(3)) {
      sinceInterrupt = [...buf.subarray(buf.lastIndexOf(3) + 1)];
      interruptTimer = setTimeout(() => {
        interruptTimer = null;
        log("no answer to Ctrl-C: the VM is blocked; restarting it");
        pending = sinceInterrupt.concat(pending);
        sinceInterrupt = [];
        restart("safe", "friendly", 0, true);
      }, INTERRUPT_GRACE_MS);
    }
  } else {
    for (const b of buf) pending.push(b);
  }
}

const server = net.createServer((sock) => {
  if (client) { log("new connection replaces the previous one"); client.destroy(); }
  client = sock;
  sock.setNoDelay(true);
  sock.on("data", toBoard);
  sock.on("error", () => {});
  sock.on("close", () => { if (client === sock) client = null; });
});

server.listen(opts.port, "127.0.0.1", () => {
  const port = server.address().port;
  process.stdout.write("socket://127.0.0.1:" + port + "\n");
  log("flash at " + path.resolve(opts.fs) + "; WiFi " + opts.wifi.map((w) => w[0]).join(", "));
  start("power", "friendly");
});

// Resolves once the process has exited and been reaped (no zombie left in
// our process group for whoever stopped us to find).
function gone(c) {
  return new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve();
    else c.once("exit", resolve);
  });
}

function shutdown() {
  stopping = true;
  server.close();
  if (client) client.destroy();
  const waits = [];
  if (spare) { waits.push(gone(spare)); spare.kill("SIGKILL"); }
  if (child) {
    // The power goes: the board's flash already holds what littlefs would
    // (flash.mjs writes through); closing stdin ends the boot at once.
    const c = child;
    waits.push(gone(c));
    c.stdin.end();
    setTimeout(() => c.kill("SIGKILL"), 1000).unref();
  }
  Promise.all(waits).then(() => process.exit(0));
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
