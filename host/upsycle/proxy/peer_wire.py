"""Messages between federated proxies (docs/federation.md), in the overlay's
type block (96..127) after PolderCast's own (96..102).

A proxy link is a Noise XX link on the proxy's ordinary port (TCP); the
initiator's first message inside it is ``fed_hello`` with its static public
key, which must be the key the handshake proved (the responder checks it
against the link's bound id), and the responder answers ``fed_welcome``.
After that both ends send PolderCast's gossip (overlay_shuffle, vicinity_*,
rings_*) and the messages below, in either direction.

- ``fed_data``: one stored message of a topic, with where it was first
  accepted (``origin``, the origin proxy's overlay id) and its number there
  (``oseq``: 1, 2, 3... per topic and origin, no gaps). ``catchup`` = 1 for a
  message sent because the receiver's summary lacked it (not forwarded on).
  The payload is opaque (sealed end to end on private topics).
- ``fed_ack``: the receiver stored it durably (``code`` ""), already had it
  (``"dup"``), or refuses it for good (``not_subscribed``, ``bad_origin``):
  the sender forgets it either way. No answer means "try again later".
- ``fed_summary``: what the sender holds of one topic, per origin: the
  retention floor (nothing at or below it is wanted) and the runs of origin
  numbers it holds. The receiver answers with the messages it holds that the
  summary lacks (catch-up, anti-entropy).
"""
from shared_protocol.wire import envelope as E
from shared_protocol.session import messages as W
from shared_protocol.overlay import common, ids
from shared_protocol.overlay import poldercast  # noqa: F401 (registers PolderCast's types first)

KEY_LEN = 32
# Origins per summary and runs per origin: 16 x 8 runs of ~19 bytes stay far
# under a frame; a topic with more publishing sites is summarised over
# several periods (the origins rotate, see catchup.py).
SUMMARY_ORIGINS_MAX = 16
RUNS_MAX = 8
# Origin sequences fit 48 bits (a million messages a second for 8 years).
OSEQ_MAX = (1 << 48) - 1
HOPS_MAX = 255
CODE_MAX = 32

ACK_STORED = ""
ACK_DUP = "dup"
ACK_NOT_SUBSCRIBED = "not_subscribed"
ACK_BAD_ORIGIN = "bad_origin"

HELLO = E.REGISTRY.register(112, "fed_hello", (
    ("key", E.BYTES, KEY_LEN),
    ("addr", E.BYTES, common.ADDR_MAX),
))
WELCOME = E.REGISTRY.register(113, "fed_welcome", (
    ("key", E.BYTES, KEY_LEN),
    ("addr", E.BYTES, common.ADDR_MAX),
))
DATA = E.REGISTRY.register(114, "fed_data", (
    ("topic", E.BYTES, W.TOPIC_ID_MAX),
    ("msg_id", E.BYTES, W.MSG_ID_MAX),
    ("origin", E.BYTES, ids.ID_LEN),
    ("oseq", E.UINT, OSEQ_MAX),
    ("hops", E.UINT, HOPS_MAX),
    ("catchup", E.UINT, 1),
    ("payload", E.BYTES, W.PAYLOAD_MAX),
))
ACK = E.REGISTRY.register(115, "fed_ack", (
    ("topic", E.BYTES, W.TOPIC_ID_MAX),
    ("msg_id", E.BYTES, W.MSG_ID_MAX),
    ("code", E.TEXT, CODE_MAX),
))
SUMMARY = E.REGISTRY.register(116, "fed_summary", (
    ("topic", E.BYTES, W.TOPIC_ID_MAX),
    ("origins", E.LIST, SUMMARY_ORIGINS_MAX),   # [[origin, floor, [[lo, hi], ...]], ...]
    ("complete", E.UINT, 1),                    # 1: origins not listed hold nothing here
))

# A proxy's announcement on the LAN (lan_peers.py): a hint, checked by the
# handshake of the link it leads to.
ANNOUNCE = E.REGISTRY.register(117, "fed_announce", (
    ("key", E.BYTES, KEY_LEN),
    ("addr", E.BYTES, common.ADDR_MAX),
))

# The messages a proxy link carries (the session layer hands them on).
PEER_TYPES = frozenset(range(96, 128))


class SummaryError(common.OverlayError):
    code = "fed_summary"


def check_summary(origins):
    """[[origin, floor, [[lo, hi], ...]], ...] -> {origin: (floor, runs)}.
    Raises SummaryError on anything misshaped (runs ascending, disjoint)."""
    out = {}
    for item in origins:
        if type(item) is not list or len(item) != 3:
            raise SummaryError("bad_entry", "a summary entry is [origin, floor, runs]")
        origin, floor, runs = item
        if not common.check_id(origin) or origin in out:
            raise SummaryError("bad_entry", "an origin is a %d-byte proxy id, listed once" % ids.ID_LEN)
        if type(floor) is not int or not (0 <= floor <= OSEQ_MAX):
            raise SummaryError("bad_entry", "a floor is 0..%d" % OSEQ_MAX)
        if type(runs) is not list or len(runs) > RUNS_MAX:
            raise SummaryError("bad_entry", "at most %d runs per origin" % RUNS_MAX)
        last = 0
        for r in runs:
            if type(r) is not list or len(r) != 2 or type(r[0]) is not int or type(r[1]) is not int \
                    or not (last < r[0] <= r[1] <= OSEQ_MAX):
                raise SummaryError("bad_entry", "runs are ascending, disjoint [lo, hi] of 1..%d" % OSEQ_MAX)
            last = r[1] + 1
        out[origin] = (floor, runs)
    return out


def missing(mine, floor, runs, truncated):
    """The origin numbers in my runs that a peer with (floor, runs) lacks,
    as runs: above its floor, outside its runs; if its list of runs was cut
    (truncated), only below its last run's end."""
    out = []
    cap = runs[-1][1] if (truncated and runs) else OSEQ_MAX
    for lo, hi in mine:
        lo = max(lo, floor + 1)
        hi = min(hi, cap)
        if lo > hi:
            continue
        cur = lo
        for a, b in runs:
            if b < cur:
                continue
            if a > hi:
                break
            if a > cur:
                out.append([cur, a - 1])
            cur = max(cur, b + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append([cur, hi])
    return out
