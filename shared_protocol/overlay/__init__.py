"""Node-to-node overlays, without a proxy.

- cyclon.py  CYCLON peer sampling: a small random view of the nodes around
- lan.py     LAN discovery, CYCLON shuffles and sealed DMC anti-entropy
"""
