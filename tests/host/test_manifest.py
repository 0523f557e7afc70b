"""firmware/manifest.py (freezing the firmware into a MicroPython image) must
name exactly the modules `upsycle flash` copies to /lib, so it cannot rot
while files are added or moved. The manifest is evaluated here with our own
small stand-ins for MicroPython's manifest functions (tools/makemanifest.py
in MicroPython: include, package, module), which record what would be
frozen."""
import os

from upsycle import firmware_build, flashing, paths

MANIFEST = os.path.join(paths.FIRMWARE_DIR, "manifest.py")


def _frozen(path):
    """{frozen module path (e.g. "firmware/app.py"): source file} and the
    includes, from evaluating the manifest at path."""
    here = os.path.dirname(path)
    frozen = {}
    includes = []

    def base(base_path):
        return os.path.normpath(os.path.join(here, base_path))

    def include(p):
        includes.append(p)

    def package(package_path, files=None, base_path=".", opt=None):
        root = base(base_path)
        if files is None:   # every .py file below the package, as makemanifest does
            files = []
            for d, _, names in os.walk(os.path.join(root, package_path)):
                for n in names:
                    if n.endswith(".py"):
                        files.append(os.path.relpath(os.path.join(d, n), os.path.join(root, package_path)))
        for f in files:
            src = os.path.join(root, package_path, f)
            assert os.path.isfile(src), "manifest names %s, which does not exist" % src
            frozen[(package_path + "/" + f).replace(os.sep, "/")] = src

    def module(module_path, base_path=".", opt=None):
        src = os.path.join(base(base_path), module_path)
        assert os.path.isfile(src), "manifest names %s, which does not exist" % src
        frozen[module_path] = src

    with open(path) as f:
        code = compile(f.read(), path, "exec")
    exec(code, {"include": include, "package": package, "module": module})
    return frozen, includes


def test_manifest_freezes_exactly_what_flash_copies_to_lib():
    frozen, includes = _frozen(MANIFEST)
    copied = {}
    for local, remote in flashing.source_files():
        if remote.startswith("lib/"):
            copied[remote[len("lib/"):-len(".mpy")] + ".py"] = local
    # a docstring-only package __init__ is frozen (in flash it costs no
    # heap) but not copied (firmware_build.docstring_only)
    empty = [k for k, v in frozen.items() if k.endswith("/__init__.py") and firmware_build.docstring_only(v)]
    assert empty
    for k in empty:
        del frozen[k]
    assert sorted(frozen) == sorted(copied), (
        "only in the manifest: %s; only copied by upsycle flash: %s"
        % (sorted(set(frozen) - set(copied)), sorted(set(copied) - set(frozen))))
    for name, src in frozen.items():
        assert os.path.samefile(src, copied[name]), name


def test_manifest_keeps_the_ports_own_modules():
    # Without the port's manifest the image would lose asyncio, network
    # helpers and the rest of what the board firmware normally freezes.
    _, includes = _frozen(MANIFEST)
    assert includes == ["$(PORT_DIR)/boards/manifest.py"]


def test_manifest_is_not_flashed_or_in_the_mip_package():
    remotes = [r for _, r in flashing.source_files()]
    assert "lib/firmware/manifest.mpy" not in remotes
    assert "firmware/manifest.py" not in [u[0] for u in flashing.mip_package()["urls"]]
