"""Loopback ports for tests, benchmarks and demos that start their own servers."""
import socket


def free_port():
    """A port free on 127.0.0.1 for both TCP and UDP (the proxy listens on both)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
