"""Cryptography for UPSYCLE: one API (crypto.api), two backends.

Import what you need from ``shared_protocol.crypto.api``; the modules beside
it are the pure-Python primitives, one per concern:

- sha512.py            SHA-512 (FIPS 180-4), for Ed25519; boards lack it
- field.py             GF(2^255 - 19)
- x25519.py            X25519 (RFC 7748)
- ed25519.py           Ed25519 (RFC 8032), plus the Ed25519 -> X25519 key map
- chacha20poly1305.py  ChaCha20-Poly1305 IETF AEAD (RFC 8439)
- hkdf.py              HMAC-SHA256 (RFC 2104), HKDF (RFC 5869)
- ct.py                constant-time comparison

What "constant-time" means here. Our code has no branch and no table index
that depends on a secret: the X25519 ladder swaps by masks (RFC 7748 §5), the
Ed25519 window lookup scans all 16 entries with masks, and MAC comparison ORs
every byte. The interpreters' big-int arithmetic underneath is not
constant-time (its cost varies with operand size), so the pure backend resists
coarse timing attacks, not a local attacker measuring cycles. Hosts, which
face the network directly, use libsodium.
"""
