"""Sliding anti-replay window over sequence numbers (RFC 4303 §3.4.3).

Remembers the highest number accepted and, as bits of one integer, which of
the ``size`` numbers below it were accepted too. Numbers older than the
window are refused: late enough to be indistinguishable from a replay.
``check`` never changes state; ``accept`` is called only after the message
carrying the number has been authenticated, so forgeries change nothing.
"""

# Default window: 64 slots, RFC 4303's recommended size; one small int of state.
DEFAULT_SIZE = 64


class ReplayWindow:
    def __init__(self, size=DEFAULT_SIZE, top=-1, seen=0):
        self.size = size
        self.top = top      # highest number accepted, -1 if none
        self.seen = seen    # bit i set: number (top - i) accepted

    def is_fresh(self, n):
        if n > self.top:
            return True
        age = self.top - n
        if age >= self.size:
            return False
        return (self.seen >> age) & 1 == 0

    def accept(self, n):
        if n > self.top:
            shift = n - self.top
            if shift < self.size:
                self.seen = ((self.seen << shift) | 1) & ((1 << self.size) - 1)
            else:
                self.seen = 1
            self.top = n
        else:
            self.seen |= 1 << (self.top - n)
