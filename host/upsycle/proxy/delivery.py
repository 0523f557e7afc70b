"""Delivery: stored messages to subscribers, within each session's window.

``Delivery`` (mixed into the Proxy) pumps messages from the store per
subscription, from the subscriber's cursor (``SubState``), tells a
subscriber what retention or its queue limit made it miss, and counts the
queue drops.
"""
from shared_protocol.session import messages as W
from upsycle.proxy.links import now_ms


class Delivery:
    """Pumps stored messages into sessions (state: queue_drops)."""

    def _init_delivery(self):
        self.queue_drops = {}
        self._retx = set()             # UDP links with deliveries in flight (server.py _tick)

    def pump(self, link):
        """Hand stored messages to the session while its window has room."""
        if link.paused or not link.subs:
            return
        ps = link.ps
        room = ps.room()
        if room <= 0:
            return
        t = None
        qmax = self.limits["subscriber_queue"]
        for topic in sorted(link.subs):
            st = link.subs[topic]
            tv = self.store.topics.get(topic)
            while room > 0 and tv is not None and st.sent_upto < tv.last_seq:
                if t is None:
                    t = now_ms()
                if st.sent_upto + 1 < tv.first_seq:
                    self._missed(link, topic, st, tv.first_seq - 1, tv.cause, t)
                    room -= 1
                    continue
                if qmax and tv.last_seq - st.sent_upto > qmax:
                    self._missed(link, topic, st, tv.last_seq - qmax, W.MISSED_QUEUE, t)
                    room -= 1
                    continue
                rows = self.store.fetch(topic, st.sent_upto, room)
                if not rows:
                    break
                n = len(rows)
                if rows[0][0] == st.sent_upto + 1 and rows[-1][0] == st.sent_upto + n:
                    # Nothing missing between them (sequences only grow): the
                    # whole run in one call, as deliver of each.
                    ps.deliver_run(topic, rows, t)
                    st.sent_upto += n
                    room -= n
                    continue
                for seq, msg_id, payload in rows:
                    if seq != st.sent_upto + 1:
                        # Retention removed rows between our checks.
                        self._missed(link, topic, st, seq - 1, tv.cause, t)
                        room -= 1
                        if room <= 0:
                            break
                    ps.deliver(topic, seq, msg_id, payload, t)
                    st.sent_upto = seq
                    room -= 1
                    if room <= 0:
                        break
        if not ps.reliable and ps.in_flight():
            self._retx.add(link)

    def _missed(self, link, topic, st, upto, cause, t):
        count = upto - st.sent_upto
        link.ps.missed(topic, upto, count, cause, t)
        st.sent_upto = upto
        if cause == W.MISSED_QUEUE:
            self.queue_drops[cause] = self.queue_drops.get(cause, 0) + count
        self.faults.note("missed_" + cause, n=0, node=link.node, topic=topic, count=count)

    # -- observability -----------------------------------------------------------

