"""Tick arithmetic: the one rule for every ``now`` a sans-I/O object gets.

``now`` is milliseconds from a counter with any origin. On a board that
counter is ``time.ticks_ms()``, which wraps: its period is 2**30 ms on the
ESP32 and RP2 ports (about 12.4 days of uptime; docs/micropython.md). Across
the wrap a later tick is numerically smaller, so ``now - then`` and
``now >= due`` give wrong answers. Every protocol object therefore
subtracts, offsets and compares ticks only through this module:

    clock.diff(a, b)   signed ms from b to a (a later than b: positive)
    clock.add(t, d)    the tick d ms after t
    clock.due(now, t)  True once now has reached t

Set once by the platform, like the random source of crypto/api.py: on
MicroPython the defaults are ``time.ticks_diff``/``time.ticks_add``; on
CPython, where hosts pass ``time.monotonic()`` in ms that never wraps,
plain arithmetic. ``use(diff, add)`` replaces both (``wrapping(period)``
builds a pair for any period, which the tests use to run CPython across
the same wrap a board sees). Callers look them up at each call
(``clock.diff``), so a replacement reaches every object.
"""
try:
    from time import ticks_diff as diff, ticks_add as add
except ImportError:   # CPython: monotonic ms, no wrap
    def diff(a, b):
        return a - b

    def add(t, d):
        return t + d

# The ticks_ms period of the ESP32 and RP2 ports, where boards run.
BOARD_PERIOD = 1 << 30
# Longest interval a timer may span: two ticks compare right only while they
# are less than half a period apart (ticks_add refuses more), ~6.2 days.
SPAN_MAX = BOARD_PERIOD // 2 - 1


def due(now, t):
    return diff(now, t) >= 0


def earliest(a, b):
    """The earlier of two ticks; None stands for "no timer"."""
    if a is None or (b is not None and diff(b, a) < 0):
        return b
    return a


def use(diff_fn, add_fn):
    """Install the platform's tick arithmetic (once, before any object runs)."""
    global diff, add
    diff = diff_fn
    add = add_fn


def wrapping(period):
    """diff/add for a counter of ``period`` (a power of two), like MicroPython's
    ticks_diff/ticks_add: the distance is taken modulo the period, centred
    on zero, so it is right while the two ticks are less than half a period
    apart."""
    mask = period - 1
    half = period >> 1

    def wdiff(a, b):
        return ((a - b + half) & mask) - half

    def wadd(t, d):
        return (t + d) & mask
    return wdiff, wadd
