"""Regenerate firmware/package.json (the mip package of the node firmware).

    PYTHONPATH=host:. python tools/write_mip_package.py

Run it after adding, moving or removing a file under shared_protocol/ or
firmware/; tests/host/test_boards.py fails while the file is stale.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "host"), ROOT]

from upsycle import flashing  # noqa: E402

with open(flashing.MIP_PACKAGE, "w") as f:
    f.write(json.dumps(flashing.mip_package(), indent=1) + "\n")
print("wrote %s (%d files)" % (flashing.MIP_PACKAGE, len(flashing.mip_package()["urls"])))
