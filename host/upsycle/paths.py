"""Where the product's parts are, in a checkout and in an installed package.

The board code is two Python packages, ``shared_protocol`` and ``firmware``
(with firmware/root/: boot.py, main.py), installed beside ``upsycle`` (in a
checkout they sit side by side at the top). upsycle's own data are in this
package: the board profiles (profiles/), the virtual board (vboard/) and
the MicroPython VM runner (mpvm/).
"""
import os

import firmware
import shared_protocol

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
SHARED_PROTOCOL_DIR = os.path.dirname(os.path.abspath(shared_protocol.__file__))
FIRMWARE_DIR = os.path.dirname(os.path.abspath(firmware.__file__))
# The board packages by name, as they are laid out under /lib on a board.
BOARD_PACKAGES = (("shared_protocol", SHARED_PROTOCOL_DIR), ("firmware", FIRMWARE_DIR))
PROFILES_DIR = os.path.join(PACKAGE_DIR, "profiles")
VBOARD_DIR = os.path.join(PACKAGE_DIR, "vboard")
MPVM_DIR = os.path.join(PACKAGE_DIR, "mpvm")
