"""The proxy's counters: ``report`` builds them in the proxy (answered to
s_status_req from a ``status_from`` address); ``fetch_status`` asks a
running proxy for them over its TCP port (`upsycle proxy status`)."""
import asyncio
import time

from shared_protocol.wire import envelope as E
from upsycle.proxy.event_loop import name_of
from shared_protocol.wire import framing
from shared_protocol.session import messages  # noqa: F401 (registers the message types)

STATUS_TIMEOUT_S = 5.0
# Largest status answer: a frame of framing's default size less the
# Noise tag and some room.
STATUS_FRAME_MAX = framing.STREAM_FRAME_DEFAULT - 64


async def fetch_status(host, port, timeout=STATUS_TIMEOUT_S):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(framing.frame(E.REGISTRY.encode("s_status_req")))
        await writer.drain()
        dec = framing.StreamDecoder()
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                raise RuntimeError("the proxy closed the connection")
            for f in dec.feed(data):
                m = E.REGISTRY.decode(f)
                if m.name == "s_status":
                    return m["status"]
                if m.name == "error":
                    raise RuntimeError("%s: %s" % (m["code"], m["detail"]))
    finally:
        writer.close()


def report(proxy):
    """The counters of a running Proxy, as sent in s_status."""
    store = proxy.store
    stored_n, stored_b = store.stored_totals()
    queued = 0
    for (node, topic), cursor in store.subs.items():
        tv = store.topics.get(topic)
        if tv is not None and tv.last_seq > cursor:
            queued += min(tv.last_seq - max(cursor, tv.first_seq - 1), max(0, tv.count()))
    drops = dict(store.drops)
    for k, v in proxy.queue_drops.items():
        drops[k] = drops.get(k, 0) + v
    out = {
        "uptime_s": int(time.time() - proxy.started),
        "sessions": len(proxy.sessions),
        "links": len(proxy.links),
        "topics": len(store.topics),
        "subscriptions": len(store.subs),
        "stored_messages": stored_n,
        "stored_bytes": stored_b,
        "queued_messages": queued,
        "pending_write_bytes": store.pending_bytes(),
        "commits": store.commits,
        "drops": drops,
        "rejects": dict(proxy.rejects),
        "faults": dict((k, v) for k, v in proxy.faults.counts.items() if not k.startswith("missed_")),
        "proxy_key": proxy.public_key.hex(),
        "plaintext": "allowed" if proxy.config.allow_plaintext else "refused",
        "handshakes_in_progress": proxy.handshake_count,
        "secure_handshakes": proxy.secure_sessions,
        "hinted_handshakes": proxy.hinted_handshakes,
        "federation": proxy.fed.status(),
        "ble": proxy.ble.status() if proxy.ble is not None else "off",
        "event_loop": name_of(asyncio.get_running_loop()),
    }
    # The answer is one frame (framing's 4 KB): the peer and ring lists
    # are cut to fit (`upsycle proxy peers` shows the first of them).
    fed = out["federation"]
    while len(E.REGISTRY.encode("s_status", out)) > STATUS_FRAME_MAX and (fed["peers"] or fed["rings"]):
        if len(fed["peers"]) >= len(fed["rings"]):
            fed["peers"].pop()
        else:
            fed["rings"].pop(sorted(fed["rings"])[-1])
        fed["cut"] = True
    return out
