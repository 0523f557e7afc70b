# machine for the virtual board: the subset of MicroPython's machine module
# that upsycle firmware uses, with the same names and constants as the ESP32
# port. The watchdog is kept by the virtual board's server process, so it
# fires even when board code blocks the VM (as a real WDT would).
import time

import _vboard_js as _js
from micropython import const

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)

# The virtual CPU clock: reported only, nothing runs at this speed.
_FREQ_HZ = const(240_000_000)
# Longest watchdog timeout, as on the RP2040 (the strictest board we target).
WDT_MAX_MS = const(8388)


def reset():
    _js.requestReset("hard", 0)
    raise SystemExit


def soft_reset():
    _js.requestReset("soft", 0)
    raise SystemExit


def deepsleep(ms=0):
    # Wakes by a reset with DEEPSLEEP_RESET as the cause, like an ESP32.
    _js.requestReset("deepsleep", ms)
    raise SystemExit


def lightsleep(ms=0):
    # Blocks the VM (and Node) like time.sleep; prefer asyncio.sleep_ms.
    time.sleep_ms(ms)


def idle():
    pass


def reset_cause():
    return _js.resetCause()


def unique_id():
    return bytes.fromhex(_js.uniqueId())


def freq(hz=None):
    return _FREQ_HZ


class WDT:
    """Cannot be stopped once started; survives soft resets."""

    def __init__(self, id=0, timeout=5000):
        if timeout < 1 or timeout > WDT_MAX_MS:
            raise ValueError("timeout must be 1..%d ms" % WDT_MAX_MS)
        _js.wdtStart(timeout)

    def feed(self):
        _js.wdtFeed()


_pins = {}


class Pin:
    IN = const(1)
    OUT = const(3)
    OPEN_DRAIN = const(7)
    PULL_UP = const(2)
    PULL_DOWN = const(1)
    IRQ_RISING = const(1)
    IRQ_FALLING = const(2)

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self._id = id
        if id not in _pins:
            _pins[id] = 0
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self._mode = mode
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return _pins[self._id]
        _pins[self._id] = 1 if v else 0
        _js.pinChanged(str(self._id), _pins[self._id])

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(1 - _pins[self._id])

    def irq(self, handler=None, trigger=0):
        return None

    def __repr__(self):
        return "Pin(%r)" % (self._id,)


class ADC:
    """ADC channel 4 is the internal temperature sensor (as on an RP2040).

    Other channels read a slowly varying mid-scale value.
    """
    CORE_TEMP = const(4)
    ATTN_11DB = const(3)

    def __init__(self, pin, atten=None):
        self._ch = pin if isinstance(pin, int) else 0

    def read_u16(self):
        return _js.adcRead(self._ch)

    def read_uv(self):
        return self.read_u16() * 3_300_000 // 65535

    def read(self):
        return self.read_u16() >> 4
