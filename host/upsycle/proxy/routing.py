"""Routing: session events to the store and the store's results back.

``Routing`` (mixed into the Proxy) owns which links are subscribed to which
topic on this run (``topic_links``) and the reject counters. Publishes go to
the Store and are acknowledged from its commit callback, i.e. only once
durable; subscriptions become durable the same way.
"""
import time

from shared_protocol.session import messages as W
from upsycle.proxy.links import PUBLISH_WINDOW, SubState


class Routing:
    """Session events -> store requests; commits -> acks and deliveries."""

    def _init_routing(self):
        self.topic_links = {}          # topic -> set of Links subscribed on this run
        self.rejects = {}

    def handle_events(self, link):
        evs = link.ps.events()
        if not evs:
            return
        now = time.monotonic()
        submit = self.store.submit_publish
        for ev in evs:
            kind = ev[0]
            if kind != "bad":
                link.active = now   # what idle-session eviction goes by
            if kind == "publish":
                # _on_publish inline for a publish it takes (once per message)
                msg_id = ev[2]
                prefix = link.node[:W.MSG_ID_NODE_BYTES]
                if msg_id[:len(prefix)] == prefix and link.unacked < PUBLISH_WINDOW:
                    refused = submit(ev[1], msg_id, ev[3], ("pub", link, msg_id), link.node)
                    if refused is None:
                        link.unacked += 1
                    else:
                        self._refused(link, msg_id, refused)
                else:
                    self._on_publish(link, ev[1], msg_id, ev[3])
            elif kind == "dack":
                st = link.subs.get(ev[1])
                if st is not None:
                    seq = ev[2] if ev[2] <= st.sent_upto else st.sent_upto
                    if seq > st.cursor:
                        st.cursor = seq
                        self.store.move_cursor(link.node, ev[1], seq)
            elif kind == "hello":
                self._on_hello(link, ev[1])
            elif kind == "subscribe":
                self._on_subscribe(link, ev[1])
            elif kind == "unsubscribe":
                topic = ev[1]
                self._unlink_topic(link, topic)
                link.ps.drop_topic(topic)
                self.store.submit_unsubscribe(link.node, topic, ("unsub", link, topic))
            elif kind == "peer":
                self.fed.on_link_message(link, ev[1], ev[2])
            elif kind == "bad":
                self.faults.note(ev[1], peer=link.name(), detail=ev[2])
            elif kind == "bye":
                self.flush(link)
                self.close_link(link, "bye")
            elif kind == "expired":
                self.close_link(link, "expired")
            elif kind == "status":
                if self._trusted(link.host):
                    link.ps.status(self.status())
                else:
                    self.faults.note("status_refused", peer=link.name())
                    link.ps.error("forbidden", "status is served to %s only" % ", ".join(self.config.status_from))
            if link.closed:
                return


    def _on_publish(self, link, topic, msg_id, payload):
        # The store keeps one message per (topic, message id), so an id must
        # belong to its publisher: otherwise any session could publish first
        # under another node's next id (ids are node id | sequence, easy to
        # predict) and that node's message would be taken for a retransmission
        # and dropped. The node id itself is bound to the link's key.
        prefix = link.node[:W.MSG_ID_NODE_BYTES]   # W.message_id_is_from, inline (once per message)
        if msg_id[:len(prefix)] != prefix:
            self.faults.note("msg_id_foreign", peer=link.name())
            self._reject(link, msg_id, W.R_MSG_ID, "message id must start with the first %d bytes of your node id"
                         % W.MSG_ID_NODE_BYTES)
            return
        if link.unacked >= PUBLISH_WINDOW:
            self.faults.note("publish_window", peer=link.name())
            self._reject(link, msg_id, W.R_LIMIT, "more than %d publishes in flight" % PUBLISH_WINDOW)
            return
        refused = self.store.submit_publish(topic, msg_id, payload, ("pub", link, msg_id), link.node)
        if refused is not None:
            self._refused(link, msg_id, refused)
            return
        link.unacked += 1

    def _refused(self, link, msg_id, refused):
        """The store refused a publish now: (code, detail)."""
        self.faults.note("reject_" + refused[0], peer=link.name())
        self._reject(link, msg_id, refused[0], refused[1])

    def _reject(self, link, msg_id, code, detail):
        self.rejects[code] = self.rejects.get(code, 0) + 1
        link.ps.rejected(msg_id, code, detail)

    def _on_subscribe(self, link, topic):
        st = link.subs.get(topic)
        if st is not None:
            link.ps.subscribed(topic, st.cursor)   # a retransmitted subscribe
            return
        if topic in link.pending_subs:
            return   # retransmitted while the first is being stored: one answer comes
        # Subscribes still queued for the store count: a burst must not get
        # past the limit before the first of them commits.
        if len(link.subs) + len(link.pending_subs) >= self.limits["max_subscriptions"]:
            self.faults.note("subscription_limit", peer=link.name())
            link.ps.error(W.R_LIMIT, "at most %d subscriptions per session" % self.limits["max_subscriptions"])
            return
        # Durable subscriptions live in memory too (cursor map): neither one
        # node (over its sessions) nor a client inventing node ids may grow
        # it without bound; a subscription to a new topic creates the topic.
        refused = self.store.may_subscribe(link.node, topic)
        if refused is not None:
            cause = {"total": "total_subscription_limit", "node": "node_subscription_limit",
                     "topics": "subscription_topic_limit"}[refused[0]]
            self.faults.note(cause, peer=link.name())
            link.ps.error(W.R_LIMIT if refused[0] != "topics" else W.R_TOO_MANY_TOPICS, refused[1])
            return
        if not link.pending_subs:
            link.pending_subs = set()
        link.pending_subs.add(topic)
        self.store.submit_subscribe(link.node, topic, ("sub", link, topic))

    def _routing_release(self, link):
        """A link closes: it is subscribed to nothing on this run any more."""
        self.fed.link_closed(link)
        for topic in link.subs:
            s = self.topic_links.get(topic)
            if s is not None:
                s.discard(link)
                if not s:
                    del self.topic_links[topic]
        link.subs = {}

    def _unlink_topic(self, link, topic):
        link.subs.pop(topic, None)
        s = self.topic_links.get(topic)
        if s is not None:
            s.discard(link)
            if not s:
                del self.topic_links[topic]

    # -- store results ---------------------------------------------------------

    def on_commit(self, batch, results):
        err = results["error"]
        if err is not None:
            self.faults.note("storage_" + err[0], error=err[1])
        items = results["items"]
        origins = results.get("origins") or {}
        touched = set()
        local = []       # our sessions' new messages: (topic, msg_id, payload, origin, oseq)
        # Acknowledgements go out per run of one link's publishes (acked_many):
        # a batch holds each read's publishes side by side.
        run_link = None
        run = []
        for i, it in enumerate(batch):
            tok = it[4]
            kind, link = tok[0], tok[1]
            if kind == "pub" and err is None:
                link.unacked -= 1
                o = origins.get(i)
                if o is not None and items[i][0] == "ok":
                    local.append((it[1], it[2], it[3], o[0], o[1]))
                if link.closed:
                    continue
                if link is not run_link:
                    if run:
                        run_link.ps.acked_many(run)
                    run_link, run = link, []
                    touched.add(link)
                run.append(tok[2])
                continue
            if run:
                run_link.ps.acked_many(run)
                run_link, run = None, []
            if kind == "fed":
                # A message from another proxy (federation.py).
                self.fed.stored(tok[1], items[i][0] if err is None else None, err)
                continue
            if kind == "pub":
                link.unacked -= 1
            elif kind == "sub":
                pending = link.pending_subs
                if tok[2] in pending:
                    pending.discard(tok[2])
                    if not pending:
                        link.pending_subs = ()
            if link.closed:
                continue
            touched.add(link)
            if err is not None:
                if kind == "pub":
                    self._reject(link, tok[2], err[0], "storage failed: %s" % err[1][:150])
                else:
                    link.ps.error(err[0], "storage failed: %s" % err[1][:150])
                continue
            if kind == "sub":
                topic = tok[2]
                if link.node != it[1] or topic in link.subs:
                    continue
                cursor = items[i][1]
                link.subs[topic] = SubState(cursor)
                self.topic_links.setdefault(topic, set()).add(link)
                link.ps.subscribed(topic, cursor)
            else:
                link.ps.unsubscribed(tok[2])
        if run:
            run_link.ps.acked_many(run)
        # Acknowledgements leave first: a publisher whose window was full
        # sends its next messages while deliveries are still being made.
        for link in touched:
            if not link.closed:
                self.flush(link)
        if local:
            self.fed.local_published_many(local)
        if err is None:
            for topic in results["topics"]:
                s = self.topic_links.get(topic)
                if s:
                    touched.update(s)
        for link in touched:
            if not link.closed:
                self.pump(link)
                self.flush(link)
