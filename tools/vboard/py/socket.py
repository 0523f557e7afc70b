# socket for the virtual board: UDP over the host's loopback through Node's
# dgram, with MicroPython's socket API (getaddrinfo, socket, bind, sendto,
# recvfrom, setblocking/settimeout, setsockopt, close).
#
# The VM cannot block (a blocking wait would stop Node's event loop and with
# it every packet), so a receive with nothing queued raises OSError(EAGAIN)
# in every mode; board code waits with `await vboard.wait_readable(sock)`
# (see tools/vboard/README.md) or polls between asyncio sleeps.
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
        if af != AF_INET:
            raise OSError(_EOPNOTSUPP)
        if type != SOCK_DGRAM:
            raise OSError(_EOPNOTSUPP)  # TCP is not bridged yet
        self._id = _js.udpOpen()
        self._timeout = None
        self._event = None

    def _live(self):
        if self._id is None:
            raise OSError(_EBADF)
        err = _js.udpError(self._id)
        if err:
            raise OSError(err)
        return self._id

    def bind(self, addr):
        host, port = _check_addr(addr)
        _js.udpBind(self._live(), host, port)

    def connect(self, addr):
        self._peer = _check_addr(addr)

    def send(self, data):
        return self.sendto(data, self._peer)

    def sendto(self, data, addr):
        host, port = _check_addr(addr)
        data = bytes(data)
        return _js.udpSend(self._live(), data.hex(), host, port)

    def recvfrom(self, bufsize):
        r = _js.udpRecv(self._live(), bufsize)
        if r is None:
            raise OSError(_EAGAIN)
        hexdata, host, port = r.split(" ")
        return bytes.fromhex(hexdata), (host, int(port))

    def recv(self, bufsize):
        return self.recvfrom(bufsize)[0]

    def readable(self):
        """True if a datagram is queued (VM-only helper)."""
        return _js.udpPending(self._live()) > 0

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
            _js.udpOnMessage(self._live(), self._wake)
        while not self.readable():
            self._event.clear()
            await self._event.wait()
