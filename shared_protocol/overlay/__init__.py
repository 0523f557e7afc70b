"""Overlays: who talks to whom.

Between nodes, without a proxy:
- cyclon.py         CYCLON peer sampling: a small random view of the nodes around
- lan.py            LAN discovery, CYCLON shuffles and sealed DMC anti-entropy

The core overlay of proxies (docs/overlay.md): PolderCast over CYCLON with
RingCast-style relay-free dissemination:
- ids.py            ring ids (hash of the static key), topic ids, ring distances
- profile.py        Bloom-filter subscription profiles, BLIP
- urps.py           URPS sampler in front of CYCLON's input
- vicinity.py       VICINITY interest clustering
- rings.py          per-topic ring neighbours
- dissemination.py  forwarding rule, seen-set
- poldercast.py     one proxy's node: the layers together
- common.py         their errors, limits and Outgoing
"""
