"""`upsycle pub TOPIC MESSAGE...`: publish; exit 0 once every message is acked."""
import asyncio
import sys

from upsycle.errors import USAGE, HostError


def register(sub):
    p = sub.add_parser("pub", help="publish messages to a topic through a proxy")
    p.add_argument("topic", help="topic name, or topic id as 32 hex digits")
    p.add_argument("messages", nargs="+", metavar="MESSAGE", help="one message each ('-': lines of stdin)")
    _common(p)
    p.add_argument("--timeout", type=float, default=30.0,
                   help="give up (exit 1) if not every message is acknowledged within this many seconds")
    p.set_defaults(func=run)


def _common(p):
    p.add_argument("--proxy", default="127.0.0.1:7883", help="the proxy's HOST:PORT")
    p.add_argument("--udp", action="store_true", help="talk to the proxy over UDP instead of TCP")
    p.add_argument("--node-id", help="plaintext links only (--insecure): this node's id in hex "
                                     "(default: kept in $UPSYCLE_HOME/node_id). A secure link's node id "
                                     "is derived from the node key in $UPSYCLE_HOME/node_key")
    p.add_argument("--home", help="node key, remembered proxy keys and private topics "
                                  "(default $UPSYCLE_HOME or ~/.upsycle)")
    p.add_argument("--proxy-key", metavar="HEX",
                   help="pin the proxy's public key (from `upsycle proxy status`); without it the key "
                        "seen first is remembered in HOME/known_proxies and required afterwards")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext session (the proxy must run with --insecure / allow_plaintext)")


def client_from_args(args):
    """The client for args, and the topic to use with it.

    A TOPIC that names a private topic in the local key store (created or
    joined with `upsycle topic`) is sealed and opened with its keys: the
    proxy sees only its id and ciphertext. Any other TOPIC is plaintext.
    """
    from upsycle.client import Client
    from upsycle.group_codec import GroupCodec
    from upsycle.proxy.config import parse_hostport
    from upsycle.topic_store import StoreError, TopicStore, home_dir
    host, port = parse_hostport(args.proxy)
    if args.node_id and not args.insecure:
        raise UsageError("--node-id is for plaintext links (--insecure); a secure link's node id is "
                         "bound to the node key in HOME/node_key (use --home to be another node)")
    node_id = bytes.fromhex(args.node_id) if args.node_id else None
    proxy_key = None
    if args.proxy_key:
        try:
            proxy_key = bytes.fromhex(args.proxy_key)
        except ValueError:
            proxy_key = b""
        if len(proxy_key) != 32:
            raise UsageError("--proxy-key takes the proxy's public key: 64 hex digits")
    codec, topic = None, args.topic
    store = TopicStore(home_dir(args.home))
    try:
        member = store.find(args.topic)
    except StoreError:
        member = None
    if member is not None:
        codec = GroupCodec(store)
        topic = member.topic
    c = Client(host, port, node_id=node_id, transport="udp" if args.udp else "tcp", codec=codec,
               secure=not args.insecure, proxy_key=proxy_key, home=home_dir(args.home))
    return c, topic


class UsageError(HostError):
    code = USAGE


def refused_errors():
    from upsycle.client import ProxyKeyMismatch, SessionRefused
    return (ProxyKeyMismatch, SessionRefused)


def run(args):
    msgs = []
    for m in args.messages:
        if m == "-":
            msgs.extend(line.rstrip("\n") for line in sys.stdin)
        else:
            msgs.append(m)
    return asyncio.run(_pub(args, [m.encode("utf-8") for m in msgs]))


async def _pub(args, msgs):
    from upsycle.client import PublishRejected
    try:
        c, topic = client_from_args(args)
    except UsageError as e:
        print("upsycle pub: %s" % e, file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    try:
        await c.connect(timeout=args.timeout)
        futs = []
        for m in msgs:
            futs.append(await asyncio.wait_for(c.publish_nowait(topic, m),
                                               max(0.01, deadline - loop.time())))
        await asyncio.wait_for(asyncio.gather(*futs), max(0.01, deadline - loop.time()))
    except PublishRejected as e:
        print("upsycle pub: the proxy refused a message: %s" % e, file=sys.stderr)
        return 1
    except refused_errors() as e:
        print("upsycle pub: %s" % e, file=sys.stderr)
        return 1
    except (ConnectionError, asyncio.TimeoutError) as e:
        print("upsycle pub: not every message was acknowledged: %s" % (e or "timeout"), file=sys.stderr)
        return 1
    finally:
        await c.close()
    return 0
