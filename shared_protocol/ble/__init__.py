"""Messages over Bluetooth LE GATT, sans-I/O.

- link.py    one GATT connection's message link: fragments to the ATT MTU,
             bounded reassembly, per-message acks with a credit window,
             retransmission with time passed in, duplicate drop
- errors.py  the typed errors

The messages are the same bytes a UDP datagram carries (a Noise packet of
noise/udp.py, a sealed LAN datagram of overlay/lan.py): this layer only
makes a lossy, MTU-limited notification/write channel carry them whole.
docs/ble.md has the design and what is tested only over the virtual radio.
"""
