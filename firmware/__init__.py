"""The upsycle node firmware (MicroPython boards and the virtual board).

On a board this package lives in /lib/firmware as .mpy files; /boot.py and
/main.py (from firmware/root/) start it. See boards/ for the board profiles
and host/upsycle/flashing.py for how it gets there.
"""

VERSION = "0.1.0"
