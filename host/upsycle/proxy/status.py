"""Ask a running proxy for its counters over its TCP port (s_status_req)."""
import asyncio

from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages  # noqa: F401 (registers the message types)

STATUS_TIMEOUT_S = 5.0


async def fetch_status(host, port, timeout=STATUS_TIMEOUT_S):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(framing.frame(E.REGISTRY.encode("s_status_req")))
        await writer.drain()
        dec = framing.StreamDecoder()
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                raise RuntimeError("the proxy closed the connection")
            for f in dec.feed(data):
                m = E.REGISTRY.decode(f)
                if m.name == "s_status":
                    return m["status"]
                if m.name == "error":
                    raise RuntimeError("%s: %s" % (m["code"], m["detail"]))
    finally:
        writer.close()
