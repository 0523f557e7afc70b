"""The proxy's per-message fast paths on CPython, in one place.

The proxy runs the shared session state machine (session/proxy.py), which
the MicroPython VM tests run too; on the host its codec hooks get the C-backed
equivalents of upsycle.wire_fast, TCP frames are split and joined by
slicing, and Noise transport messages go straight to libsodium
(upsycle.noise_fast). Each of these makes the same bytes as the shared code
(tests/host/test_wire_fast.py); the server only calls the names below.
"""
import asyncio
import socket

from shared_protocol import clock
from shared_protocol.session.proxy import ProxySession
from shared_protocol.wire import cbor
from shared_protocol.wire import envelope as E
from upsycle import noise_fast, wire_fast

StreamDecoder = wire_fast.StreamDecoder
frames = wire_fast.frames
frame = wire_fast.frame
fast_cipher = noise_fast.fast
_encode_deliver = wire_fast.encode_deliver
_deliver_run = wire_fast.deliver_run
_publish_fields = wire_fast.publish_fields
# s_puback of a message id of n < 24 bytes: these bytes, then the id
# (wire_fast.encode_puback; tests/host/test_proxy_fastpath.py holds them to it).
_PUBACK_HEAD = tuple(b"\x83\x01\x18\x37" + bytes((0x40 | n,)) for n in range(24))


class HostProxySession(ProxySession):
    decode = staticmethod(wire_fast.decode)
    encode_deliver = staticmethod(wire_fast.encode_deliver)
    encode_puback = staticmethod(wire_fast.encode_puback)

    def receive(self, data, now):
        # A publish (one per message) in its usual form: taken apart in one
        # call and made the same event ProxySession.receive makes of it.
        if self.node is not None and type(data) is bytes:
            v = _publish_fields(data)
            if v is not None:
                self.last_rx = now
                self._events.append(("publish", v[0], v[1], v[2]))
                return
        # Messages of the overlay block (96..127: another proxy's link,
        # federation.py) become ("peer", message) events; the session layer
        # never sees them. An envelope [1, type, ...] with a type of 24..255
        # starts array head, 0x01, 0x18, type.
        if len(data) > 3 and data[2] == 0x18 and 96 <= data[3] < 128 and data[1] == 1:
            try:
                msg = E.REGISTRY.decode(data)
            except (cbor.DecodeError, E.EnvelopeError) as e:
                self._error("decode:" + e.code, e.message)
                return
            self.last_rx = now
            self._events.append(("peer", msg, len(data)))
            return
        ProxySession.receive(self, data, now)

    def acked(self, msg_id):
        # ProxySession.acked for an s_publish (no short publish waiting):
        # the s_puback bytes made here, one call per acknowledged message.
        if self._short or len(msg_id) >= 24:
            ProxySession.acked(self, msg_id)
        else:
            self._out.append(_PUBACK_HEAD[len(msg_id)] + msg_id)

    def acked_many(self, msg_ids):
        """acked of each message id, in order."""
        if self._short:
            for m in msg_ids:
                self.acked(m)
            return
        out = self._out
        for m in msg_ids:
            n = len(m)
            out.append(_PUBACK_HEAD[n] + m if n < 24 else self.encode_puback(m))

    def deliver_run(self, topic, rows, now):
        """deliver of each (seq, msg_id, payload) of rows, all of one topic,
        in order (the caller keeps within room())."""
        if not rows:
            return
        msgs = _deliver_run(topic, rows)
        items = self._inflight.get(topic)
        if items is None:
            items = self._inflight[topic] = []
        if self._n_inflight == 0:
            self._due = clock.add(now, self._rto)
        for r, data in zip(rows, msgs):
            items.append([r[0], data])
        self._n_inflight += len(msgs)
        self._out.extend(msgs)

    def deliver(self, topic, seq, msg_id, payload, now):
        # ProxySession.deliver and _push in one call (a call per delivered
        # message less); the same state and the same bytes.
        data = _encode_deliver(topic, seq, msg_id, payload)
        items = self._inflight.get(topic)
        if items is None:
            items = self._inflight[topic] = []
        if self._n_inflight == 0:
            self._due = clock.add(now, self._rto)
        items.append([seq, data])
        self._n_inflight += 1
        self._out.append(data)


def seal_frames(seal, msgs, limit):
    """Seal each session message (``seal``: a secure link's) and frame them
    for one write."""
    # A TCP link's seal is its sending CipherState's encrypt_with_ad with an
    # empty ad (session/secure_proxy.py); with the host's libsodium cipher
    # the whole write is sealed in one call (noise_fast.encrypt_many).
    sec = getattr(seal, "__self__", None)
    send = getattr(sec, "_send", None)
    if type(send) is noise_fast.HostCipherState and not sec.datagram:
        return wire_fast.frames(send.encrypt_many(b"", msgs), limit)
    return wire_fast.frames([seal(m) for m in msgs], limit)


# Datagrams taken per wake-up of the UDP socket. asyncio's datagram transport
# reads one per event-loop iteration (a poll and a callback each); under load
# the proxy drains what queued up in one go instead. Bounded, so TCP links
# and timers still get their turn between batches.
UDP_BATCH_MAX = 64


class UdpEndpoint:
    """The proxy's UDP socket: up to UDP_BATCH_MAX datagrams read per
    wake-up, each handed to ``protocol.datagram_received(data, addr)``,
    then ``protocol.datagrams_done()`` if it has one; ``sendto`` sends at once. When the kernel's send buffer is full a
    datagram is dropped and counted (``dropped``), as the network may drop
    it: the session protocol retransmits, and nothing queues without bound
    in the proxy. The subset of asyncio's DatagramTransport the server uses."""

    def __init__(self, loop, sock, protocol, max_size):
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._max = max_size
        self._fd = sock.fileno()
        self.dropped = 0
        self._closed = False
        loop.add_reader(self._fd, self._read_many)

    def _read_many(self):
        recvfrom = self._sock.recvfrom
        deliver = self._protocol.datagram_received
        try:
            for _ in range(UDP_BATCH_MAX):
                try:
                    data, addr = recvfrom(self._max)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self._protocol.error_received(exc)
                    return
                deliver(data, addr)
        finally:
            done = getattr(self._protocol, "datagrams_done", None)
            if done is not None:
                done()   # the batch's output: one pump and flush per link

    def sendto(self, data, addr):
        if self._closed:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError as exc:
            self._protocol.error_received(exc)

    def get_extra_info(self, name, default=None):
        if name == "sockname":
            return self._sock.getsockname()
        if name == "socket":
            return self._sock
        return default

    def is_closing(self):
        return self._closed

    def close(self):
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)
            self._sock.close()


async def open_udp(protocol, local_addr, max_size):
    """Bind a UDP socket at local_addr and serve it with UdpEndpoint;
    returns (endpoint, protocol) like loop.create_datagram_endpoint."""
    loop = asyncio.get_running_loop()
    # Resolved in the loop's thread, not the executor: at start-up, right
    # after the TCP listener, so the UDP port is bound before anything else
    # runs (a client that saw the TCP port open may send a datagram at once).
    infos = socket.getaddrinfo(local_addr[0], local_addr[1], type=socket.SOCK_DGRAM)
    family, _, proto, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    try:
        sock.setblocking(False)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    ep = UdpEndpoint(loop, sock, protocol, max_size)
    protocol.connection_made(ep)
    return ep, protocol
