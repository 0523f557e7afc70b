"""The field demo's second site (`upsycle demo --sites 2`): a TCP relay the
demo owns between the two sites' proxies, so it can cut the link between
the sites and restore it (docs/federation.md).

Each proxy advertises its relay's address to the other, so every proxy
link between the sites, whichever side dials, passes a relay; boards and
subscribers reach their own proxy directly.
"""
import socket
import threading

from upsycle import processes

# Bytes read at once by a relay's pump threads.
RELAY_CHUNK = 65536


class TcpRelay:
    """127.0.0.1:port -> 127.0.0.1:target; ``cut`` closes every relayed
    connection and refuses new ones until ``restore``."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.port = processes.free_port()
        self.open = True
        self.closed = False
        self._conns = []
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                a, _ = self._sock.accept()
            except OSError:
                return
            if not self.open:
                a.close()
                continue
            try:
                b = socket.create_connection(self.target, 2)
            except OSError:
                a.close()
                continue
            with self._lock:
                self._conns += [a, b]
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(RELAY_CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self):
        self.open = True

    def close(self):
        self.closed = True
        self.cut()
        self._sock.close()


def proxy_args(port, relay_port, peer_relay_port):
    """Extra `upsycle proxy` arguments for one of two linked sites."""
    return ["--advertise", "127.0.0.1:%d" % relay_port, "--peer", "127.0.0.1:%d" % peer_relay_port,
            "--overlay-period", "1", "--catchup-period", "2"]
