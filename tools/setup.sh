#!/usr/bin/env bash
# One entry point for the README's two commands:
#   bash tools/setup.sh demo   install everything, then run the demo
#   bash tools/setup.sh test   install everything, then run the whole test suite
#   bash tools/setup.sh install   install only
# Idempotent: each step is skipped when what it installs is already there and
# its lock file has not changed, so a second run starts the job within seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-install}
shift || true

say() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages (Debian / Raspberry Pi OS) --------------------------------
# python3-venv: the virtualenv; nodejs+npm: the MicroPython WebAssembly VM;
# mosquitto: the MQTT bridge's tests and the broker comparison benchmark;
# mosquitto-clients: its C clients, the benchmark's anchor (mosquitto_pub/sub).
pkgs=()
command -v python3 >/dev/null || pkgs+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
{ command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || pkgs+=(mosquitto)
{ command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null; } || pkgs+=(mosquitto-clients)
command -v git >/dev/null || pkgs+=(git)
if [ ${#pkgs[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing system packages: ${pkgs[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}"
fi

mkdir -p .stamps
stamp_ok() { [ -f ".stamps/$1" ] && [ "$(cat ".stamps/$1")" = "$2" ]; }

# --- Python virtualenv with pinned packages ------------------------------------
py_key=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
  rm -f .stamps/python
fi
if ! stamp_ok python "$py_key"; then
  say "installing Python packages (requirements.lock)"
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$py_key" > .stamps/python
fi

# --- the MicroPython VM from npm (package-lock.json pins it) -------------------
js_key=$(cat host/upsycle/mpvm/package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -d host/upsycle/mpvm/node_modules/@micropython/micropython-webassembly-pyscript ] || ! stamp_ok npm "$js_key"; then
  say "installing the MicroPython VM (npm ci)"
  npm ci --prefix host/upsycle/mpvm --no-audit --no-fund --loglevel=error
  echo "$js_key" > .stamps/npm
fi

export PATH="$PWD/.venv/bin:$PATH"
case "$mode" in
  install) say "installed; activate with: . .venv/bin/activate" ;;
  demo) exec .venv/bin/upsycle demo "$@" ;;
  test)
    # -p no:cacheprovider keeps a clean checkout clean; loadfile keeps a module's
    # CPython and MicroPython halves on one worker so the VM runs it once.
    exec .venv/bin/python -m pytest -n 2 --dist loadfile -p no:cacheprovider "$@" ;;
  *) echo "usage: tools/setup.sh [install|demo|test]" >&2; exit 2 ;;
esac
