"""The edge session between a node and its proxy, both sides.

- messages.py       the session's message layouts (type block 48..79)
- client.py         the node's side (ClientSession): publish, subscribe, acks
- proxy.py          the proxy's side (ProxySession), one per node
- secure_client.py  the node's side carried inside Noise XX (SecureLink)
"""
