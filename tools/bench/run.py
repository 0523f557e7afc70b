"""Run benchmarks and print their tables.

    .venv/bin/python tools/bench/run.py            # every tools/bench/bench_*.py
    .venv/bin/python tools/bench/run.py codec      # just bench_codec.py

Each bench module has main() that prints one or more tables. Figures compare
against an anchor measured in the same run (a ratio), since these machines
are noisy; MicroPython figures come from the WebAssembly VM, not a board.
"""
import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv):
    names = argv or sorted(f[6:-3] for f in os.listdir(HERE) if f.startswith("bench_") and f.endswith(".py"))
    for name in names:
        mod = importlib.import_module("bench_" + name)
        t0 = time.perf_counter()
        mod.main()
        print("(bench_%s took %.1f s)\n" % (name, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
