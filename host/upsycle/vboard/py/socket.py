# socket for the virtual board: UDP over the host's loopback through Node's
# dgram, with MicroPython's socket API (getaddrinfo, socket, bind, sendto,
# recvfrom, setblocking/settimeout, setsockopt, close), and TCP client
# connections through Node's net (connect, send/write, recv/read, close).
#
# The VM cannot block (a blocking wait would stop Node's event loop and with
# it every packet), so a receive with nothing queued raises OSError(EAGAIN)
# in every mode; board code waits with `await vboard.wait_readable(sock)`
# (see host/upsycle/vboard/README.md) or polls between asyncio sleeps.
import _vboard_js as _js
import asyncio
from micropython import const

AF_INET = const(2)
SOCK_STREAM = const(1)
SOCK_DGRAM = const(2)
SOCK_RAW = const(3)
IPPROTO_IP = const(0)
IPPROTO_UDP = const(17)
IPPROTO_TCP = const(6)
SOL_SOCKET = const(1)
SO_REUSEADDR = const(4)
SO_BROADCAST = const(32)
IP_ADD_MEMBERSHIP = const(1024)

_EAGAIN = const(11)
_EBADF = const(9)
_EOPNOTSUPP = const(95)
_EINVAL = const(22)
_ENOTCONN = const(107)


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    if host in ("localhost", "", "0.0.0.0"):
        host = "127.0.0.1"
    parts = host.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        # The virtual network has no DNS: names other than localhost fail
        # like an unknown host on a board.
        raise OSError(-2)
    return [(AF_INET, type or SOCK_STREAM, proto, "", (host, port))]


def _check_addr(addr):
    if not (isinstance(addr, tuple) and len(addr) == 2 and isinstance(addr[1], int)):
        raise TypeError("address must be a (host, port) tuple")
    return getaddrinfo(addr[0], addr[1])[0][4]


class socket:
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        if af != AF_INET or type not in (SOCK_DGRAM, SOCK_STREAM):
            raise OSError(_EOPNOTSUPP)
        self._tcp = type == SOCK_STREAM
        # A TCP socket gets its Node connection at connect().
        self._id = None if self._tcp else _js.udpOpen()
        self._closed = False
        self._timeout = None
        self._event = None

    def _live(self):
        if self._id is None:
            raise OSError(_ENOTCONN if self._tcp and not self._closed else _EBADF)
        err = _js.udpError(self._id)
        if err:
            raise OSError(err)
        return self._id

    def bind(self, addr):
        if self._tcp:
            raise OSError(_EOPNOTSUPP)  # no TCP servers on the virtual board yet
        host, port = _check_addr(addr)
        _js.udpBind(self._live(), host, port)

    def connect(self, addr):
        """UDP: set the peer. TCP: start connecting and return at once
        (writes wait in Node until the connection is up; a refused
        connection shows as OSError(ECONNREFUSED) on the next call)."""
        addr = _check_addr(addr)
        if self._tcp:
            if self._id is not None or self._closed:
                raise OSError(_EBADF if self._closed else 127)  # EISCONN
            self._id = _js.tcpConnect(addr[0], addr[1])
        self._peer = addr

    def send(self, data):
        if self._tcp:
            data = bytes(data)
            return _js.tcpSend(self._live(), data.hex())
        return self.sendto(data, self._peer)

    write = send

    def sendall(self, data):
        self.send(data)

    def read(self, n=-1):
        return self.recv(n if n >= 0 else 1 << 20)

    def sendto(self, data, addr):
        host, port = _check_addr(addr)
        data = bytes(data)
        return _js.udpSend(self._live(), data.hex(), host, port)

    def recvfrom(self, bufsize):
        if self._tcp:
            r = _js.tcpRecv(self._live(), bufsize)
            if r is None:
                raise OSError(_EAGAIN)
            return bytes.fromhex(r), self._peer
        r = _js.udpRecv(self._live(), bufsize)
        if r is None:
            raise OSError(_EAGAIN)
        hexdata, host, port = r.split(" ")
        return bytes.fromhex(hexdata), (host, int(port))

    def recv(self, bufsize):
        return self.recvfrom(bufsize)[0]

    def readable(self):
        """True if a datagram or TCP data (or the peer's close) waits (VM-only helper)."""
        if self._id is None:
            return self._live()  # raises the right error
        # A pending error counts as readable: the next call reports it.
        return _js.udpPending(self._id) > 0 or _js.sockHasError(self._id)

    def setblocking(self, flag):
        self._timeout = None if flag else 0

    def settimeout(self, t):
        self._timeout = t

    def setsockopt(self, level, opt, value):
        pass

    def getsockname(self):
        return ("127.0.0.1", _js.udpPort(self._live()))

    def close(self):
        if self._id is not None:
            _js.udpClose(self._id)
            self._id = None
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # -- asyncio wake-up: Node calls _wake when a datagram arrives.
    def _wake(self, *a):
        if self._event is not None:
            self._event.set()

    async def _wait(self):
        if self._event is None:
            self._event = asyncio.Event()
            if self._id is None:
                self._live()
            _js.udpOnMessage(self._id, self._wake)
        while not self.readable():
            self._event.clear()
            await self._event.wait()
