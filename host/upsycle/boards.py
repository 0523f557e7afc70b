"""Board profiles: upsycle/profiles/<name>.json, data read by the flasher and tests.

Each profile says what a board has (radios, heap, LED and sensor pins), which
MicroPython it must run (`micropython`, `platform` as sys.platform reports
it) and which native architecture mpy-cross targets for it
(`mpy_cross_arch`, or null for plain bytecode). profiles/README.md documents
the fields.
"""
import json
import os

from upsycle import paths
from upsycle.errors import BOARD, HostError

BOARDS_DIR = paths.PROFILES_DIR

REQUIRED = {
    "name": str, "title": str, "micropython": str, "platform": str,
    "radios": list, "heap_bytes": int, "stack_budget_bytes": int,
    "flash_fs_bytes": int, "wdt_max_ms": int, "led": dict, "sensor": dict,
}
ARCHES = ("xtensawin", "rv32imc", "armv6m", "armv7emsp", "x64", None)


class BoardError(HostError, ValueError):
    """An unknown board name or a malformed profile."""
    code = BOARD


def names():
    return sorted(f[:-5] for f in os.listdir(BOARDS_DIR) if f.endswith(".json"))


def load(name):
    path = os.path.join(BOARDS_DIR, name + ".json")
    if not name or "/" in name or not os.path.isfile(path):
        raise BoardError("unknown board %r; known boards: %s" % (name, ", ".join(names())))
    with open(path) as f:
        try:
            prof = json.load(f)
        except ValueError as e:
            raise BoardError("%s is not valid JSON: %s" % (path, e)) from None
    for key, typ in REQUIRED.items():
        if not isinstance(prof.get(key), typ):
            raise BoardError("%s: field %r must be a %s" % (path, key, typ.__name__))
    if prof["name"] != name:
        raise BoardError("%s: name %r does not match the file name" % (path, prof["name"]))
    if prof.get("mpy_cross_arch", "missing") not in ARCHES:
        raise BoardError("%s: mpy_cross_arch must be one of %s" % (path, ARCHES))
    return prof


def all_profiles():
    return [load(n) for n in names()]
