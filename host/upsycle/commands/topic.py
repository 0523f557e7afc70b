"""`upsycle topic ...`: private topics on this host.

    upsycle topic create NAME
    upsycle topic invite TOPIC [--read] [--write] [--expires SECONDS] [--png F] [--svg F]
    upsycle topic join URL
    upsycle topic remove TOPIC MEMBER      (MEMBER: a prefix of the member key, see `members`)
    upsycle topic seal TOPIC TEXT --out FILE   (publish offline: a sealed message)
    upsycle topic open TOPIC FILE              (read a publication or apply a re-key)
    upsycle topic list
    upsycle topic members TOPIC

Keys live in the topic store (upsycle.topic_store). An invite URL is a
secret: it carries the new member's key. The same URL goes into a board's
config at flashing time. ``remove`` writes the re-key message to
``<home>/outbox/`` for the node's proxy client to publish on the topic.
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
    r.set_defaults(func=cmd_remove)
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
    for action in (c, i, j, r, se, op, ls, m):
        action.add_argument("--home", default=argparse.SUPPRESS, help="as `topic --home`")


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
    rekey = admin.remove(hits[0], api.random_bytes(32), api.random_bytes(32))
    store.save(admin)
    outbox = os.path.join(store.home, "outbox")
    os.makedirs(outbox, mode=0o700, exist_ok=True)
    path = os.path.join(outbox, "%s-rekey-%d.cbor" % (admin.topic.hex(), admin.epoch))
    with open(path, "wb") as f:
        f.write(rekey)
    print("removed %s; topic %s is now at epoch %d (%d members remain)" % (
        hits[0].hex()[:16], admin.name, admin.epoch, len(admin.members)))
    print("re-key message (%d bytes) to publish on the topic: %s" % (len(rekey), path))
    return 0


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
