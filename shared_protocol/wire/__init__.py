"""The wire format every message shares.

- cbor.py      deterministic CBOR (RFC 8949 §4.2.1), the one encoding
- envelope.py  [type, version, body] with a registry of message layouts
- framing.py   datagram mode (one message per datagram) and stream mode
               (2-byte length prefix) with their size limits
"""
