# upsycle: runs first at every reset. Kept tiny: nothing here may fail, or
# the board would not reach main.py.
import sys

if "/lib" not in sys.path:
    sys.path.append("/lib")
