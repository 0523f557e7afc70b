// Run Python steps in the MicroPython 1.27 WebAssembly VM with the project's
// board code on its filesystem.
//
// usage: node run.mjs [--vm MICROPYTHON.mjs] [--mount NAME=DIR]... [--heap BYTES]
//                     [--allow-all-imports] [--arg A]... (--file F.py | --code SRC)...
//
// Every --file/--code is one step, run by its own runPython call, so control
// returns to JS between steps: that is when a scheduled gc.collect() really
// runs (docs/micropython.md), which is what heap measurements need.
//
// Each --mount copies a host directory to /proj/NAME in the VM (upsycle/vm.py
// mounts the board code, shared_protocol/ and firmware/; the tests add
// tests/shared/ and tests/vectors/); /proj and /proj/tests/shared are put on
// sys.path. --vm names the VM's micropython.mjs (npm package
// @micropython/micropython-webassembly-pyscript, pinned by package-lock.json
// beside this file; default: its node_modules here).
// Imports are then limited to the modules that real board firmware has: the
// WebAssembly build ships more (abc, logging, functools, ...) and code that
// passes here must still boot on an ESP32 or a Pico W.
import fs from "node:fs";
import path from "node:path";
import url from "node:url";

const here = path.dirname(url.fileURLToPath(import.meta.url));
const DEFAULT_VM = path.join(here, "node_modules", "@micropython", "micropython-webassembly-pyscript",
  "micropython.mjs");

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
    # __import__(name, globals, locals, fromlist, level): level > 0 is a
    # relative import inside one of our packages, always allowed.
    if len(args) >= 4 and args[3] > 0:
        return _orig_import(name, *args)
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
  const mounts = [];
  let vm = DEFAULT_VM;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--vm") vm = args[++i];
    else if (a === "--mount") {
      const s = args[++i], k = s.indexOf("=");
      if (k < 1) throw new Error("--mount wants NAME=DIR");
      mounts.push([s.slice(0, k), s.slice(k + 1)]);
    } else if (a === "--heap") heap = parseInt(args[++i], 10);
    else if (a === "--allow-all-imports") guard = false;
    else if (a === "--file") steps.push(fs.readFileSync(args[++i], "utf8"));
    else if (a === "--code") steps.push(args[++i]);
    else if (a === "--arg") argv.push(args[++i]);
    else throw new Error("unknown argument " + a);
  }
  const { loadMicroPython } = await import(url.pathToFileURL(vm).href);
  const mp = await loadMicroPython({
    heapsize: heap,
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stderr.write(line + "\n"),
  });
  for (const [name, src] of mounts) {
    if (!fs.existsSync(src)) throw new Error("--mount " + name + ": no directory " + src);
    copyTree(mp.FS, src, "/proj/" + name);
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
