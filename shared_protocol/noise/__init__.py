"""Noise_XX_25519_ChaChaPoly_SHA256 for node<->proxy and node<->node links.

- handshake.py  the sans-I/O XX handshake (transactional reads), SymmetricState (Noise §5.2)
- symmetric.py  CipherState (Noise §5.1)
- stream.py     length-prefixed frames over TCP/serial/BLE (NoiseSocket style)
- datagram.py   explicit nonces and a replay window for UDP
- events.py     the events both transports hand out
- udp.py        a whole UDP session: handshake with retransmission, then datagram.py
- errors.py     the typed errors
"""
