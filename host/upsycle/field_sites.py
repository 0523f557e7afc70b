"""The field demo's other sites (`upsycle demo --sites 2|3`): TCP relays the
demo owns between the sites' proxies, so it can cut the link between two
sites and restore it (docs/federation.md).

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


class Line:
    """Three sites in a line (`upsycle demo --sites 3`): site A (the
    boards), "home" (a box with a fixed address) and site B. Each site knows
    only home, with home's key pinned, and home knows both sites (their keys
    learnt at the listed addresses on its first dial), so under the default
    ``peer_policy = "listed"`` every message between A and B passes home.
    Start home first (``pin_home`` once its key exists). Each direction of
    each link has its TCP relay; ``cut_relays`` are those of the link
    between A and home."""

    SITES = ("a", "home", "b")
    LINKS = (("a", "home"), ("home", "b"))

    def __init__(self, work, port_a):
        import os
        self.data = {"a": os.path.join(work, "proxy"), "home": os.path.join(work, "proxy-home"),
                     "b": os.path.join(work, "proxy-b")}
        self.ports = {"a": port_a, "home": processes.free_port(), "b": processes.free_port()}
        self.relays = []
        self.peers = dict((s, []) for s in self.SITES)
        for x, y in self.LINKS:
            to_y, to_x = TcpRelay(self.ports[y]), TcpRelay(self.ports[x])
            self.relays += [to_y, to_x]
            self.peers[x].append(["127.0.0.1:%d" % to_y.port, y])
            self.peers[y].append(["127.0.0.1:%d" % to_x.port, x])
        self.cut_relays = self.relays[:2]
        self.home_key = None

    def pin_home(self):
        """Read home's key (made when it started) for the sites' configs."""
        from upsycle import identity
        self.home_key = identity.public_key(identity.proxy_key(self.data["home"])).hex()

    def args(self, site):
        """Extra `upsycle proxy` arguments for ``site``."""
        out = []
        for addr, peer in self.peers[site]:
            out += ["--peer", addr + ("@" + self.home_key if peer == "home" else "")]
        return out + ["--overlay-period", "1", "--catchup-period", "2"]
