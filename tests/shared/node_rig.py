"""A board's node with its proxy link "open" and the test carrying the
datagrams (no socket, no clock): for tests on CPython (tests/host) and in
the MicroPython VM (tests/shared)."""
import sys

from shared_protocol.wire import envelope as E


class _NoSockets:
    pass


def no_sockets():
    """The VM has no socket module; the node only needs the name at import."""
    if "socket" not in sys.modules:
        try:
            import socket  # noqa: F401
        except ImportError:
            sys.modules["socket"] = _NoSockets


def open_node(data_dir, invite, logs):
    """A node with one topic (``invite``), its plaintext proxy session
    welcomed and subscribed; its log lines go to ``logs``."""
    no_sockets()
    import os
    from firmware import platform, runtime
    if not hasattr(os, "urandom"):   # the VM's os lacks it (boards have it)
        from shared_protocol.rand import Rng
        platform.random_bytes = Rng(7).randbytes
    cfg = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [invite],
           "proxies": ["127.0.0.1:9"], "publish_interval_s": 1, "link": "plaintext"}
    n = runtime.Node(cfg, data_dir=data_dir, log=logs.append)
    for t in n.topics:
        n.proxy.session.subscribe(t.topic, 0)
    n.proxy.session.start(0, False)
    n.proxy.sock = object()    # the link is "open": the test carries the datagrams
    n.proxy.outgoing()
    n.proxy.receive(E.REGISTRY.encode("s_welcome", b"proxy", 10000, 8), 1)
    for t in n.topics:
        n.proxy.receive(E.REGISTRY.encode("s_subscribed", t.topic, 0), 2)
    n.turn(3)
    n.proxy.outgoing()
    return n
