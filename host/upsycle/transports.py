"""The host client's transports (client.py): asyncio protocols that carry
the session's messages over TCP (frames, framing.py; or the secure link's
own byte stream) or UDP (one message per datagram) and hand what arrives to
the client. Reconnecting and timers are the client's.
"""
import asyncio
import logging
import time

from shared_protocol.wire import framing

log = logging.getLogger("upsycle.client")


def now_ms():
    return int(time.monotonic() * 1000)


async def open_transport(client):
    """A new link to client.host:client.port over client.kind (tcp or udp)."""
    loop = asyncio.get_running_loop()
    if client.kind == "tcp":
        _, proto = await loop.create_connection(lambda: TcpTransport(client), client.host, client.port)
    else:
        _, proto = await loop.create_datagram_endpoint(
            lambda: UdpTransport(client), remote_addr=(client.host, client.port))
    return proto


def send(proto, msgs, framed):
    """Write msgs: over TCP as one write (framed, unless they are already a
    secure link's stream bytes), over UDP one datagram each."""
    tr = proto.transport
    if isinstance(proto, TcpTransport):
        tr.write(b"".join(framing.frame(m) for m in msgs) if framed else b"".join(msgs))
    else:
        for m in msgs:
            tr.sendto(m)


class TcpTransport(asyncio.Protocol):
    def __init__(self, client):
        self.client = client
        self.decoder = framing.StreamDecoder()
        self.transport = None
        self.lost = False    # closed: the client checks it when the connect returns

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        c = self.client
        if c.link is not None:
            self.secure_data(data)
            return
        try:
            frames = self.decoder.feed(data)
        except framing.FrameError as e:
            log.warning("event=bad_frame_from_proxy code=%s", e.code)
            self.transport.close()
            return
        t = now_ms()
        for f in frames:
            c.session.receive(f, t)
        c.on_input()

    def secure_data(self, data):
        self.client.link.receive(data, now_ms())
        self.client.on_input()

    def connection_lost(self, exc):
        self.lost = True
        self.client.on_link_lost(self, "disconnected")


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, client):
        self.client = client
        self.transport = None
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        c = self.client
        if c.link is not None:
            c.link.receive(data, now_ms())
        else:
            c.session.receive(data, now_ms())
        c.on_input()

    def error_received(self, exc):
        pass  # ICMP unreachable while the proxy restarts: retransmission covers it

    def connection_lost(self, exc):
        self.lost = True
        self.client.on_link_lost(self, "closed")
