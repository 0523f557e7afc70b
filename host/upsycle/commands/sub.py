"""`upsycle sub TOPIC`: print delivered messages, one per line, resuming where
this subscriber (its node id) left off.

On a private topic, re-keys are applied as they arrive; a message sealed
under an epoch whose re-key has not arrived yet is kept in the topic store
(upsycle.group_codec, "held") and printed once the re-key opens it, in a
later run if need be. Nothing that may still open is dropped.
"""
import asyncio
import sys

from upsycle.commands.pub import UsageError, _common, client_from_args, refused_errors


def register(sub):
    p = sub.add_parser("sub", help="print messages of a topic, resuming where this node left off")
    p.add_argument("topic", help="topic name, or topic id as 32 hex digits")
    _common(p)
    p.add_argument("--count", type=int, help="exit 0 after this many messages")
    p.add_argument("--timeout", type=float,
                   help="stop after this many seconds (exit 1 if --count was not reached)")
    p.set_defaults(func=run)


def run(args):
    return asyncio.run(_sub(args))


async def _sub(args):
    from upsycle.group_codec import EpochChanged, Held, Rejected
    try:
        c, topic = client_from_args(args, keep_seen=True)
    except UsageError as e:
        print("upsycle sub: %s" % e, file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout
    out = sys.stdout.buffer
    got = 0
    try:
        await c.connect(timeout=args.timeout if args.timeout is not None else 30.0)
        await c.subscribe(topic)
        while args.count is None or got < args.count:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise asyncio.TimeoutError()
            d = await c.next_delivery(timeout=left)
            if d.missed:
                print("upsycle sub: %d message(s) missed (%s)" % (d.missed, d.cause), file=sys.stderr)
                continue
            if isinstance(d.payload, Rejected):
                if not d.payload.quiet:
                    print("upsycle sub: dropped a message that failed the group check (%s)" % d.payload.code,
                          file=sys.stderr)
                continue
            if isinstance(d.payload, Held):
                print("upsycle sub: kept a message until the re-key of its epoch arrives (%d kept)" % d.payload.count,
                      file=sys.stderr)
                continue
            if isinstance(d.payload, EpochChanged):
                print("upsycle sub: the topic was re-keyed; now at epoch %d" % d.payload.epoch, file=sys.stderr)
                continue
            # a batch (list) holds several readings of one author
            for body in (d.payload if isinstance(d.payload, list) else [d.payload]):
                out.write(body.replace(b"\n", b"\\n") + b"\n")
                got += 1
            out.flush()
    except asyncio.TimeoutError:
        if args.count is not None:
            print("upsycle sub: timed out after %d of %d message(s)" % (got, args.count), file=sys.stderr)
            return 1
    except (ConnectionError, *refused_errors()) as e:
        print("upsycle sub: %s" % e, file=sys.stderr)
        return 1
    finally:
        await c.close()
    return 0
