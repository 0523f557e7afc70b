"""The simulated network: who is up, which messages get lost, how late.

Message delivery is in memory. Loss is independent per message; latency is
uniform in [min, max] milliseconds; a partition assigns each node a group and
drops every message between groups until it heals. Nodes that crashed never
come back; nodes that left keep their state and may rejoin (a board that
sleeps or loses WiFi).
"""
import random

UP = 0
LEFT = 1
CRASHED = 2


class Network:
    def __init__(self, seed, loss=0.0, latency=(0, 0)):
        if not (0.0 <= loss < 1.0):
            raise ValueError("loss must be in [0, 1)")
        lo, hi = latency
        if lo < 0 or hi < lo:
            raise ValueError("latency must be MIN:MAX milliseconds with 0 <= MIN <= MAX")
        self.rng = random.Random(seed)
        self.loss = loss
        self.latency = (lo, hi)
        self.group = None       # list: node index -> partition group, or None
        self.sent = 0
        self.lost = 0
        self.cut = 0            # dropped by a partition
        self.to_down = 0        # sent to a node that is not up

    def partition(self, groups):
        self.group = groups

    def heal(self):
        self.group = None

    def passes(self, src, dst):
        """Count a message src -> dst and say whether it is delivered
        (the destination's state is checked by the caller)."""
        self.sent += 1
        g = self.group
        if g is not None and g[src] != g[dst]:
            self.cut += 1
            return False
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return False
        return True

    def delay(self):
        lo, hi = self.latency
        if hi == 0:
            return 0
        return self.rng.randint(lo, hi)
