"""The replay window against a simple model: a number is accepted iff it was
never accepted and is within `size` of the highest accepted so far."""
from hypothesis import given, settings, strategies as st

from shared_protocol.replay import ReplayWindow


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 70), st.lists(st.integers(0, 300), max_size=120))
def test_matches_model(size, seq):
    w = ReplayWindow(size)
    seen = set()
    top = -1
    for n in seq:
        expect = n not in seen and (n > top or top - n < size)
        assert w.is_fresh(n) == expect, (n, top)
        if expect:
            w.accept(n)
            seen.add(n)
            top = max(top, n)
