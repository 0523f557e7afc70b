"""`upsycle topic ...`: private topics on this host.

    upsycle topic create NAME
    upsycle topic invite TOPIC [--read] [--write] [--expires SECONDS] [--png F] [--svg F]
    upsycle topic join URL
    upsycle topic remove TOPIC MEMBER [--proxy HOST:PORT]   (MEMBER: a prefix of the member key, see `members`)
    upsycle topic resend TOPIC [--proxy HOST:PORT]          (publish the kept re-keys again)
    upsycle topic seal TOPIC TEXT --out FILE   (publish offline: a sealed message)
    upsycle topic open TOPIC FILE              (read a publication or apply a re-key)
    upsycle topic list
    upsycle topic members TOPIC

Keys live in the topic store (upsycle.topic_store). An invite URL is a
secret: it carries the new member's key. The same URL goes into a board's
config at flashing time.

``remove`` switches the topic to a new epoch and keeps the re-key in the
topic's file as not yet published (the outbox, shared_protocol.groups.admin):
with ``--proxy`` it publishes it on the topic at once; otherwise (or if the
proxy cannot be reached) the next `upsycle pub` or `upsycle sub` from this
home publishes it before anything else. A copy of each part is also
written to ``<home>/outbox/`` (for `topic open` on a host without a proxy).
``join`` draws a new sequence generation (a member key joined twice, or on
two devices, never reuses a sequence number) and refuses an invite whose
write capability has expired.
"""
import argparse
import os
import sys
import time

import segno

from shared_protocol.crypto import api
from shared_protocol.errors import UpsycleError
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url, member_from_url
from shared_protocol.groups.keys import RIGHT_READ, RIGHT_WRITE
from upsycle import crypto_nacl
from upsycle.topic_store import StoreError, TopicStore, home_dir


def register(sub):
    p = sub.add_parser("topic", help="create private topics, invite, join, remove members")
    p.add_argument("--home", help="data directory (default $UPSYCLE_HOME or ~/.upsycle)")
    tsub = p.add_subparsers(dest="topic_command", metavar="ACTION")
    c = tsub.add_parser("create", help="create a topic; this host becomes its admin")
    c.add_argument("name")
    c.set_defaults(func=cmd_create)
    i = tsub.add_parser("invite", help="print an invite URL and QR code")
    i.add_argument("topic", help="topic name or id prefix")
    i.add_argument("--read", action="store_true", help="the member may read (default if neither is given)")
    i.add_argument("--write", action="store_true", help="the member may publish")
    i.add_argument("--expires", type=int, default=0, metavar="SECONDS",
                   help="the write capability expires this many seconds from now (default: never)")
    i.add_argument("--png", metavar="FILE", help="also write the QR code as PNG")
    i.add_argument("--svg", metavar="FILE", help="also write the QR code as SVG")
    i.add_argument("--no-qr", action="store_true", help="print the URL only")
    i.set_defaults(func=cmd_invite)
    j = tsub.add_parser("join", help="join a topic from an invite URL")
    j.add_argument("url")
    j.set_defaults(func=cmd_join)
    r = tsub.add_parser("remove", help="remove a member by re-keying the topic")
    r.add_argument("topic")
    r.add_argument("member", help="hex prefix of the member key")
    _link_args(r)
    r.set_defaults(func=cmd_remove)
    rs = tsub.add_parser("resend", help="publish the kept re-keys again (for a member that was away longer "
                                        "than the proxy keeps history)")
    rs.add_argument("topic")
    _link_args(rs)
    rs.set_defaults(func=cmd_resend)
    se = tsub.add_parser("seal", help="encrypt and sign a publication to a file (for tests and offline use)")
    se.add_argument("topic")
    se.add_argument("text")
    se.add_argument("--out", required=True, metavar="FILE")
    se.set_defaults(func=cmd_seal)
    op = tsub.add_parser("open", help="open a publication or apply a re-key from a file")
    op.add_argument("topic")
    op.add_argument("file")
    op.set_defaults(func=cmd_open)
    ls = tsub.add_parser("list", help="list topics on this host")
    ls.set_defaults(func=cmd_list)
    m = tsub.add_parser("members", help="list members of a topic you administer")
    m.add_argument("topic")
    m.set_defaults(func=cmd_members)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    # --home also after the action (`topic join URL --home DIR`), as people type it;
    # SUPPRESS keeps an absent one from hiding the value given before the action.
    for action in (c, i, j, r, rs, se, op, ls, m):
        action.add_argument("--home", default=argparse.SUPPRESS, help="as `topic --home`")


def _link_args(p):
    p.add_argument("--proxy", help="publish the re-key through this proxy (HOST:PORT) now; without it, the "
                                   "next `upsycle pub`/`sub` from this home publishes it")
    p.add_argument("--udp", action="store_true", help="talk to the proxy over UDP")
    p.add_argument("--proxy-key", metavar="HEX", help="pin the proxy's public key (as for `upsycle pub`)")
    p.add_argument("--insecure", action="store_true", help="plaintext session (a proxy run with --insecure)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the proxy's acknowledgement")


def _store(args):
    crypto_nacl.install()
    return TopicStore(home_dir(args.home))


def _fail(msg):
    print("upsycle topic: " + msg, file=sys.stderr)
    return 1


def _topic_errors_fail(cmd):
    """A command that names a topic: an unknown, ambiguous or unreadable one
    (StoreError, from store.find) ends it with the store's message."""
    def run(args):
        try:
            return cmd(args)
        except StoreError as e:
            return _fail(str(e))
    return run


def cmd_create(args):
    store = _store(args)
    if any(m.name == args.name for m in store.all()):
        return _fail("a topic named %r exists already" % args.name)
    admin = Admin(api.random_bytes(32), api.random_bytes(32), name=args.name)
    admin.new_generation(api.random_bytes(3))
    store.save(admin)
    print("created topic %s (id %s)" % (args.name, admin.topic.hex()))
    return 0


@_topic_errors_fail
def cmd_invite(args):
    store = _store(args)
    admin = store.find(args.topic, admin_only=True)
    read = args.read or not args.write
    expiry = int(time.time()) + args.expires if args.expires else 0
    try:
        url = invite_url(admin.invite(api.random_bytes(32), read=read, write=args.write, expiry=expiry))
    except UpsycleError as e:
        return _fail(e.message)
    store.save(admin)
    qr = segno.make(url, error="m")
    if not args.no_qr:
        qr.terminal(compact=True)
    for path, kind in ((args.png, "png"), (args.svg, "svg")):
        if path:
            qr.save(path, kind=kind, scale=4)
            print("QR code written to %s" % path, file=sys.stderr)
    print(url)
    return 0


def cmd_join(args):
    store = _store(args)
    try:
        m = member_from_url(args.url.strip())
    except UpsycleError as e:
        return _fail("not a valid invite: %s" % e.message)
    cap = m.capability
    if cap is not None:
        from shared_protocol.groups.keys import check_write_capability
        try:
            # what every reader checks, so no one joins to publish what all refuse
            check_write_capability(cap, m.topic, m.topic_public, m.identity.public, int(time.time()))
        except UpsycleError as e:
            if e.code == "group_capability_expired":
                return _fail("this invite expired at %s (its write capability); ask the admin for a new one" %
                             time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(cap[3])))
            return _fail("not a valid invite: %s" % e.message)
    for old in store.all():
        if old.topic == m.topic and old.identity.public == m.identity.public:
            # joining the same invite again must not reset the epoch, the
            # replay windows or the sequence: keep what this home has
            print("already joined topic %s (id %s) with this invite, member key %s; kept as it is" % (
                old.name, old.topic.hex(), old.identity.public.hex()))
            return 0
    m.new_generation(api.random_bytes(3))
    path = store.save(m)
    rights = ("read" if m.can_read else "") + ("+" if m.can_read and m.can_write else "") + \
        ("write" if m.can_write else "")
    print("joined topic %s (id %s) as %s, member key %s" % (
        m.name, m.topic.hex(), rights, m.identity.public.hex()))
    print("stored in %s" % path, file=sys.stderr)
    return 0


@_topic_errors_fail
def cmd_remove(args):
    store = _store(args)
    admin = store.find(args.topic, admin_only=True)
    hits = [k for k in admin.members if k.hex().startswith(args.member.lower())]
    if len(hits) != 1:
        return _fail("%s matches %d members (see `upsycle topic members %s`)" % (args.member, len(hits), args.topic))
    parts = admin.remove(hits[0], api.random_bytes(32), api.random_bytes(32))
    store.save(admin)   # the new epoch and the unpublished re-key, in one atomic write
    outbox = os.path.join(store.home, "outbox")
    os.makedirs(outbox, mode=0o700, exist_ok=True)
    paths = []
    for i, part in enumerate(parts):
        path = os.path.join(outbox, "%s-rekey-%d%s.cbor" % (admin.topic.hex(), admin.epoch,
                                                            "" if i == 0 else ".%d" % (i + 1)))
        with open(path, "wb") as f:
            f.write(part)
        paths.append(path)
    print("removed %s; topic %s is now at epoch %d (%d members remain)" % (
        hits[0].hex()[:16], admin.name, admin.epoch, len(admin.members)))
    print("re-key message (%d bytes, %d part(s)) kept to publish on the topic; a copy: %s" % (
        sum(len(p) for p in parts), len(parts), " ".join(paths)))
    if not args.proxy:
        print("upsycle topic: the re-key is not published yet: the next `upsycle pub` or `upsycle sub` from this "
              "home publishes it (or give --proxy HOST:PORT)", file=sys.stderr)
        return 0
    return _publish_rekeys(args, store)


@_topic_errors_fail
def cmd_resend(args):
    store = _store(args)
    admin = store.find(args.topic, admin_only=True)
    if not admin.rekeys:
        return _fail("topic %s has no re-key to send" % admin.name)
    admin.resend_rekeys()
    store.save(admin)
    print("%d re-key(s) of topic %s (epochs %d-%d) to publish again" % (
        len(admin.rekeys), admin.name, admin.rekeys[0][0], admin.rekeys[-1][0]))
    if not args.proxy:
        print("upsycle topic: the next `upsycle pub` or `upsycle sub` from this home publishes them "
              "(or give --proxy HOST:PORT)", file=sys.stderr)
        return 0
    return _publish_rekeys(args, store)


def _publish_rekeys(args, store):
    import asyncio

    from upsycle.commands.pub import UsageError, client_for, refused_errors
    from upsycle.group_codec import GroupCodec

    async def run():
        try:
            c = client_for(args, GroupCodec(store))
        except UsageError as e:
            return _fail(str(e))
        try:
            await c.connect(timeout=args.timeout)
            done = await c.control_done(args.timeout)
        except (ConnectionError, asyncio.TimeoutError) as e:
            done, err = False, str(e) or "timeout"
        except refused_errors() as e:
            done, err = False, str(e)
        else:
            err = "the proxy did not acknowledge it"
        finally:
            await c.close()
        if not done:
            return _fail("re-key not published through %s (%s); it stays in this home's outbox: the next "
                         "`upsycle pub`/`sub` or `topic remove --proxy` from this home publishes it" % (args.proxy, err))
        print("re-key published on the topic through %s" % args.proxy)
        return 0
    return asyncio.run(run())


@_topic_errors_fail
def cmd_seal(args):
    store = _store(args)
    m = store.find(args.topic)
    try:
        if m.can_read:
            data = m.seal_reading(args.text.encode(), api.random_bytes(32), int(time.time()))
        else:   # write-only: sealed to the epoch's public key (group_pub)
            data = m.seal(args.text.encode(), api.random_bytes(32), int(time.time()))
    except UpsycleError as e:
        return _fail(str(e))
    store.save(m)  # the sequence number advanced
    with open(args.out, "wb") as f:
        f.write(data)
    print("sealed %d bytes for topic %s, seq %d" % (len(data), m.name, m.next_seq - 1))
    return 0


@_topic_errors_fail
def cmd_open(args):
    from shared_protocol.groups.member import EpochChanged
    store = _store(args)
    m = store.find(args.topic)
    try:
        with open(args.file, "rb") as f:
            ev = m.open(f.read(), int(time.time()))
    except UpsycleError as e:
        return _fail("rejected (%s): %s" % (e.code, e.message))
    store.save(m)
    if isinstance(ev, EpochChanged):
        print("re-keyed: topic %s now at epoch %d" % (m.name, ev.epoch))
        return 0
    for p in getattr(ev, "publications", None) or [ev]:   # a batch, or one publication
        print("%s seq %d: %s" % (p.author.hex()[:16], p.seq, p.body.decode("utf-8", "replace")))
    return 0


def cmd_list(args):
    for m in _store(args).all():
        role = "admin" if isinstance(m, Admin) else ("read" if m.can_read else "") + ("/write" if m.can_write else "")
        print("%s  %-20s epoch %-4d %s" % (m.topic.hex(), m.name, m.epoch, role.strip("/")))
    return 0


@_topic_errors_fail
def cmd_members(args):
    admin = _store(args).find(args.topic, admin_only=True)
    for k, (rights, _) in sorted(admin.members.items()):
        print("%s  %s" % (k.hex(), "+".join(n for n, b in (("read", RIGHT_READ), ("write", RIGHT_WRITE)) if rights & b)))
    return 0
