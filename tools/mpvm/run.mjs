// Run Python steps in the MicroPython 1.27 WebAssembly VM with the project's
// board code on its filesystem.
//
// usage: node run.mjs [--heap BYTES] [--allow-all-imports] (--file F.py | --code SRC)...
//
// Every --file/--code is one step, run by its own runPython call, so control
// returns to JS between steps: that is when a scheduled gc.collect() really
// runs (see shared/MICROPYTHON.md), which is what heap measurements need.
//
// The project directories shared_protocol/, firmware/, tests/shared/ and
// tests/vectors/ are copied to /proj in the VM and /proj is put on sys.path.
// Imports are then limited to the modules that real board firmware has: the
// WebAssembly build ships more (abc, logging, functools, ...) and code that
// passes here must still boot on an ESP32 or a Pico W.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import url from "node:url";

const here = path.dirname(url.fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const MOUNTS = ["shared_protocol", "firmware", "tests/shared", "tests/vectors"];

// Modules present on the ESP32 and RP2 ports of MicroPython 1.27 (plus the
// project's own packages), from board_modules.json. Anything else is refused
// even if the wasm build has it.
const BOARD_MODULES_FILE = JSON.parse(fs.readFileSync(path.join(here, "board_modules.json"), "utf8"));
const BOARD_MODULES = BOARD_MODULES_FILE.modules.concat(BOARD_MODULES_FILE.project);

function copyTree(FS, src, dst) {
  FS.mkdirTree(dst);
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    if (ent.name === "__pycache__" || ent.name.startsWith(".")) continue;
    const s = path.join(src, ent.name), d = dst + "/" + ent.name;
    if (ent.isDirectory()) copyTree(FS, s, d);
    else FS.writeFile(d, fs.readFileSync(s));
  }
}

const GUARD = `
import builtins, sys
_allowed = set(${JSON.stringify(BOARD_MODULES)})
_orig_import = builtins.__import__
def _board_import(name, *args):
    top = name.split(".")[0]
    if top and top not in _allowed and not top.startswith("test_") and top not in sys.modules:
        raise ImportError("no module named '%s' on board firmware (MicroPython 1.27 ESP32/RP2)" % name)
    return _orig_import(name, *args)
builtins.__import__ = _board_import
del _board_import
`;

async function main() {
  const args = process.argv.slice(2);
  let heap = 16 * 1024 * 1024;
  let guard = true;
  const steps = [];
  const argv = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--heap") heap = parseInt(args[++i], 10);
    else if (a === "--allow-all-imports") guard = false;
    else if (a === "--file") steps.push(fs.readFileSync(args[++i], "utf8"));
    else if (a === "--code") steps.push(args[++i]);
    else if (a === "--arg") argv.push(args[++i]);
    else throw new Error("unknown argument " + a);
  }
  const mp = await loadMicroPython({
    heapsize: heap,
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stderr.write(line + "\n"),
  });
  for (const m of MOUNTS) {
    const src = path.join(root, m);
    if (fs.existsSync(src)) copyTree(mp.FS, src, "/proj/" + m);
  }
  mp.runPython(
    "import sys\nsys.path.insert(0, '/proj')\nsys.path.insert(0, '/proj/tests/shared')\n" +
    "sys.argv[:] = " + JSON.stringify(argv) + "\n"
  );
  // Import the modules the harness itself needs before the guard goes up.
  mp.runPython("import json, gc, time, io");
  if (guard) mp.runPython(GUARD);
  let code = 0;
  for (const src of steps) {
    try {
      mp.runPython(src);
    } catch (err) {
      if (err.name === "PythonError") {
        if (err.type === "SystemExit") { code = 0; break; }
        process.stderr.write(err.message + "\n");
        code = 1;
        break;
      }
      throw err;
    }
  }
  process.exitCode = code;
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(2); });
