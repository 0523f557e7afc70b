"""Helpers for tests that run on CPython (pytest) and in the MicroPython VM.

Shared test modules (tests/shared/test_*.py) are plain functions with
``assert``; they may not import pytest, so the few helpers they need live here
and work on both interpreters.
"""
import json
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"
# A single-precision build (ESP32/RP2 firmware, the unix port built with
# MICROPY_FLOAT_IMPL_FLOAT): 0.1 is a single already.
SINGLE_FLOAT = str(1 / 3) == "0.33333334"


def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "."


# tests/shared/rig.py -> tests/vectors
VECTORS_DIR = _dirname(_dirname(__file__)) + "/vectors"


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception of type exc_type it raised.

    Fails (AssertionError) if fn returns normally or raises anything else,
    so a test pinned to a typed error catches a stray TypeError as a bug.
    """
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    except BaseException as e:
        raise AssertionError("expected %s, got %s: %s" % (exc_type.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, nothing raised" % exc_type.__name__)


def load_vectors(name):
    """Parse tests/vectors/<name> (JSON) on either interpreter."""
    with open(VECTORS_DIR + "/" + name) as f:
        return json.load(f)


def unhex(s):
    import binascii
    return binascii.unhexlify(s)
