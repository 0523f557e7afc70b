"""`upsycle pub TOPIC MESSAGE...`: publish; exit 0 once every message is acked.

On a private topic a member first catches up on re-keys (``catch_up``): a
writer that sealed in the epoch it joined would let a removed member read
what it publishes after the removal. The catch-up runs through a
subscription of its own (a second node key derived from this home's, so the
cursor of `upsycle sub` from the same home is untouched) that applies the
re-keys published since the last pub and opens nothing else.
"""
import asyncio
import hashlib
import os
import sys

from upsycle.errors import USAGE, HostError

# The catch-up stops when the proxy has sent nothing for this long (it sends
# a subscription's backlog at once; half a second covers a remote proxy's
# round trips), or after CATCHUP_MAX_S; the next pub goes on from its cursor.
CATCHUP_IDLE_S = 0.5
CATCHUP_MAX_S = 10.0
_CATCHUP_KEY_LABEL = b"upsycle-pub-catch-up-v1"
# Proxies one command line uses (a board keeps as many: firmware/config.py).
PROXIES_MAX = 4


def register(sub):
    p = sub.add_parser("pub", help="publish messages to a topic through a proxy")
    p.add_argument("topic", help="topic name, or topic id as 32 hex digits")
    p.add_argument("messages", nargs="+", metavar="MESSAGE", help="one message each ('-': lines of stdin)")
    _common(p)
    p.add_argument("--timeout", type=float, default=30.0,
                   help="give up (exit 1) if not every message is acknowledged within this many seconds")
    p.set_defaults(func=run)


def _common(p):
    p.add_argument("--proxy", action="append", metavar="HOST:PORT[@KEY]",
                   help="a proxy, its public key pinned after @ (default 127.0.0.1:7883). Repeat it for a "
                        "node with several proxies of a federation: one at a time, the next when it stops "
                        "answering (docs/federation.md)")
    p.add_argument("--all", action="store_true",
                   help="with several --proxy: publish through (and subscribe at) all of them")
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


def client_from_args(args, keep_seen=False):
    """The client for args, and the topic to use with it. keep_seen: with
    several proxies, remember the message ids handed out between runs
    (HOME/seen/TOPICID), so a run that starts at another proxy than the
    last prints nothing twice.

    A TOPIC that names a private topic in the local key store (created or
    joined with `upsycle topic`) is sealed and opened with its keys: the
    proxy sees only its id and ciphertext. Any other TOPIC is plaintext.
    """
    from upsycle.group_codec import GroupCodec
    from upsycle.topic_store import StoreError, TopicStore, home_dir
    codec, topic = None, args.topic
    store = TopicStore(home_dir(args.home))
    try:
        member = store.find(args.topic)
    except StoreError:
        member = None
    if member is not None:
        codec = GroupCodec(store)
        topic = member.topic
    seen = None
    if keep_seen:
        from upsycle import topics
        try:
            seen = topics.resolve(topic).hex() + "-" + (getattr(args, "node_id", None) or "node")
        except topics.TopicError:
            pass   # refused where the topic is used, as with one proxy
    return client_for(args, codec, seen_file=seen), topic


def _key(hexkey, what):
    try:
        key = bytes.fromhex(hexkey)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UsageError("%s takes the proxy's public key: 64 hex digits" % what)
    return key


def proxies_of(args):
    """[(host, port, pinned key or None), ...] from --proxy (repeatable,
    HOST:PORT[@KEY]) and --proxy-key (the key of a single proxy)."""
    from upsycle.proxy.config import ConfigError, parse_hostport
    given = args.proxy if isinstance(args.proxy, list) else [args.proxy] if args.proxy else []
    if len(given) > PROXIES_MAX:
        raise UsageError("at most %d proxies (--proxy), not %d" % (PROXIES_MAX, len(given)))
    out = []
    for entry in given or ["127.0.0.1:7883"]:
        addr, at, hexkey = entry.partition("@")
        try:
            host, port = parse_hostport(addr)
        except (ConfigError, ValueError) as e:
            raise UsageError("--proxy %s: %s" % (entry, e))
        out.append((host, port, _key(hexkey, "--proxy HOST:PORT@KEY") if at else None))
    if getattr(args, "proxy_key", None):
        if len(out) > 1:
            raise UsageError("--proxy-key pins a single proxy's key; with several, give each as "
                             "--proxy HOST:PORT@KEY")
        out[0] = out[0][:2] + (_key(args.proxy_key, "--proxy-key"),)
    return out


def client_for(args, codec, identity=None, seen_file=None):
    """A Client for the link options of args (--proxy, --udp, --proxy-key,
    --insecure, --node-id, --home) with ``codec`` (and another static key
    than the home's node key, if given); a MultiClient (failover, or all
    with --all) when --proxy names several proxies."""
    from upsycle.client import Client
    from upsycle.topic_store import home_dir
    proxies = proxies_of(args)
    if getattr(args, "node_id", None) and not args.insecure:
        raise UsageError("--node-id is for plaintext links (--insecure); a secure link's node id is "
                         "bound to the node key in HOME/node_key (use --home to be another node)")
    node_id = bytes.fromhex(args.node_id) if getattr(args, "node_id", None) else None
    if identity is not None and args.insecure:
        # a plaintext catch-up: a node id of its own, the same on every run
        # (its cursor at the proxy is what makes the next catch-up short)
        node_id = hashlib.sha256(identity + (node_id or b"")).digest()[:16]
    kw = dict(node_id=node_id, transport="udp" if args.udp else "tcp", codec=codec,
              secure=not args.insecure, home=home_dir(args.home), identity=identity)
    if len(proxies) == 1:
        host, port, key = proxies[0]
        return Client(host, port, proxy_key=key, **kw)
    from upsycle.multi_client import MultiClient
    seen = None
    if seen_file is not None:
        seen = os.path.join(home_dir(args.home), "seen", seen_file)
    return MultiClient(proxies, mode="all" if getattr(args, "all", False) else "failover", seen_file=seen, **kw)


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


def write_refusal(c, topic, now):
    """Why a private topic's member cannot publish (a sentence), or None:
    checked before connecting, so nothing readers would refuse is sent."""
    member = getattr(c.codec, "member", None)
    if member is None:
        return None
    m = member(topic)
    if m.removed_at is not None:
        return "this member was removed from topic %s (re-key to epoch %d): members refuse its publications" % (
            m.name, m.removed_at)
    why = m.write_refusal(now)
    return None if why is None else "topic %s: %s" % (m.name, why)


class RekeysOnly:
    """The catch-up subscription's codec: hands re-keys to the group codec,
    leaves every publication unopened (opening one would advance the replay
    windows `upsycle sub` reads with, and it would then refuse it)."""

    def __init__(self, codec):
        self.codec = codec

    def encode(self, topic_id, data):
        raise ValueError("the catch-up subscription publishes nothing")

    def decode(self, topic_id, payload):
        from shared_protocol.wire import envelope
        from shared_protocol.groups import wire
        try:
            is_rekey = envelope.REGISTRY.decode(payload).type is wire.REKEY
        except Exception:   # not even an envelope: not ours to judge here
            is_rekey = False
        return self.codec.decode(topic_id, payload) if is_rekey else None


async def catch_up(args, codec, topic, timeout):
    """Apply the re-keys of ``topic`` published since the last catch-up.
    Returns how many deliveries were looked at; raises what connect raises."""
    from upsycle.identity import node_key
    from upsycle.topic_store import home_dir
    key = hashlib.sha256(_CATCHUP_KEY_LABEL + node_key(home_dir(args.home))).digest()
    c = client_for(args, RekeysOnly(codec), identity=key)
    loop = asyncio.get_running_loop()
    end = loop.time() + min(timeout, CATCHUP_MAX_S)
    n = 0
    try:
        await c.connect(timeout=timeout)
        await c.subscribe(topic, timeout=timeout)
        while loop.time() < end:
            try:
                await c.next_delivery(timeout=min(CATCHUP_IDLE_S, max(0.01, end - loop.time())))
            except asyncio.TimeoutError:
                break
            n += 1
    finally:
        await c.close()
    return n


async def _pub(args, msgs):
    import time

    from shared_protocol.errors import UpsycleError
    from upsycle.client import PublishRejected
    try:
        c, topic = client_from_args(args)
    except UsageError as e:
        print("upsycle pub: %s" % e, file=sys.stderr)
        return 2
    why = write_refusal(c, topic, int(time.time()))
    if why is not None:
        print("upsycle pub: %s" % why, file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    try:
        m = c.codec.member(topic) if hasattr(c.codec, "member") else None
        if m is not None and not m.is_admin:
            await catch_up(args, c.codec, topic, args.timeout)
            why = write_refusal(c, topic, int(time.time()))
            if why is not None:
                print("upsycle pub: %s" % why, file=sys.stderr)
                return 1
        await c.connect(timeout=max(0.01, deadline - loop.time()))
        futs = []
        for m in msgs:
            futs.append(await asyncio.wait_for(c.publish_nowait(topic, m),
                                               max(0.01, deadline - loop.time())))
        await asyncio.wait_for(asyncio.gather(*futs), max(0.01, deadline - loop.time()))
        if not await c.control_done(max(0.01, deadline - loop.time())):
            print("upsycle pub: a re-key of a topic administered here is still unpublished; the next pub or sub "
                  "from this home publishes it", file=sys.stderr)
    except PublishRejected as e:
        print("upsycle pub: the proxy refused a message: %s" % e, file=sys.stderr)
        return 1
    except refused_errors() as e:
        print("upsycle pub: %s" % e, file=sys.stderr)
        return 1
    except (ConnectionError, asyncio.TimeoutError) as e:
        print("upsycle pub: not every message was acknowledged: %s" % (e or "timeout"), file=sys.stderr)
        return 1
    except UpsycleError as e:
        # a group check that refused to seal (e.g. a capability that expired meanwhile)
        print("upsycle pub: %s" % (e.message or e), file=sys.stderr)
        return 1
    finally:
        await c.close()
    return 0
