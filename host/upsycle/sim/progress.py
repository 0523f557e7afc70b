"""A progress bar on stderr for long simulations.

On a terminal it redraws one line; otherwise (CI logs) it prints a line at
every tenth of the run, so logs stay short.
"""
import sys
import time

# Redraw at most this often on a terminal: drawing every round of a
# 10,000-node run would cost nothing, but a 100-node run does 1000s of rounds.
_REDRAW_S = 0.2
_WIDTH = 30


class Progress:
    def __init__(self, label, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0
        self._tenth = -1

    def __call__(self, done, total):
        now = time.monotonic()
        el = now - self.t0
        eta = el / done * (total - done) if done else 0.0
        if self.tty:
            if now - self._last < _REDRAW_S and done < total:
                return
            self._last = now
            fill = int(_WIDTH * done / total)
            self.stream.write("\r%s [%s%s] %d/%d rounds %.0fs eta %.0fs " % (
                self.label, "#" * fill, "." * (_WIDTH - fill), done, total, el, eta))
        else:
            tenth = 10 * done // total
            if tenth == self._tenth:
                return
            self._tenth = tenth
            self.stream.write("%s %d/%d rounds %.0fs eta %.0fs\n" % (self.label, done, total, el, eta))
        self.stream.flush()

    def done(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
