"""Property tests of the DMC: 3-5 replicas, arbitrary interleaving of writes,
live delivery with reordering, duplication, delay and loss, partitions,
anti-entropy over lossy links, compaction at arbitrary points, and reloads
from the store. After healing, every replica encodes the same bytes and
every accepted operation is reflected, checked against a reference computed
from the operations themselves."""
from hypothesis import HealthCheck, given, settings, strategies as st

from shared_protocol.dmc import Replica, Store, Sync, OpError
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import sync as S
from shared_protocol.wire.framing import DATAGRAM_MAX
from shared_protocol.rand import Rng

AUTHORS = [bytes([0x10 * (i + 1)]) * 16 for i in range(5)]
KEYS = ["x", "y", "z"]
ELEMS = ["a", 1, b"\x00"]
KEEP = 8
AGE = 400


class MemFiles:
    def __init__(self):
        self.files = {}

    def open(self, path):
        fs = self

        class W:
            buf = b""

            def write(self, b):
                self.buf += bytes(b)

            def close(self):
                fs.files[path] = self.buf
        return W()

    def read(self, path):
        return self.files.get(path)

    def rename(self, src, dst):
        self.files[dst] = self.files.pop(src)

    def remove(self, path):
        self.files.pop(path, None)


def exchange(x, y, rng, loss, dup):
    sx = Sync(x, y.author, rng.randbelow(1 << 32))
    sy = Sync(y, x.author, rng.randbelow(1 << 32))
    q = [(sy, sx, m) for m in sx.start(0)]
    now = 0
    for _ in range(80):
        while q:
            dst, src, m = q.pop(rng.randbelow(len(q)))
            assert len(m) <= DATAGRAM_MAX
            if rng.randbelow(100) < dup:
                q.append((dst, src, m))
            if rng.randbelow(100) < loss:
                continue
            for r in dst.receive(m, now):
                q.append((src, dst, r))
        now += S.RETRY_MS
        for s, o in ((sx, sy), (sy, sx)):
            q.extend((o, s, m) for m in s.poll(now))
        if not q:
            return


def reference(issued):
    ops = [O.decode(b) for b in issued]
    counters = {}
    regs = {}
    observed = {}
    inserts = {}
    logs = {}
    for op in ops:
        author, seq, clock, deps, kind, name, a, b = op
        if kind == O.K_ADD:
            counters[name] = counters.get(name, 0) + a
        elif kind == O.K_PUT:
            cur = regs.get((name, a))
            if cur is None or (clock, author) > cur[:2]:
                regs[(name, a)] = (clock, author, b)
        elif kind in (O.K_INSERT, O.K_REMOVE):
            for t in b:
                observed.setdefault((name, a), set()).add(t)
            if kind == O.K_INSERT:
                inserts.setdefault((name, a), set()).add((author, seq))
        else:
            logs.setdefault(name, []).append((a, author, seq, b))
    sets = {}
    for (name, e), tags in inserts.items():
        if tags - observed.get((name, e), set()):
            sets.setdefault(name, set()).add(e)
    for name in logs:
        es = sorted(logs[name], key=lambda e: e[:3])
        top = es[-1][0]
        logs[name] = [(e[0], e[3]) for e in es[-KEEP:] if e[0] >= top - AGE]
    return counters, regs, sets, logs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_replicas_converge_and_lose_no_accepted_operation(data):
    n = data.draw(st.integers(3, 5), label="replicas")
    reps = [Replica(AUTHORS[i], KEEP, AGE) for i in range(n)]
    stores = [Store("r%d" % i, MemFiles()) for i in range(n)]
    inbox = [[] for _ in range(n)]   # live deliveries: (sender, op bytes)
    group = [0] * n
    issued = []
    rng = Rng(data.draw(st.integers(0, 1 << 32), label="seed"))
    steps = data.draw(st.integers(5, 70), label="steps")
    for _ in range(steps):
        act = data.draw(st.sampled_from(
            ["write"] * 5 + ["deliver"] * 5 + ["dup", "drop", "sync", "compact", "partition", "persist", "merge"]))
        i = data.draw(st.integers(0, n - 1))
        r = reps[i]
        if act == "write":
            kind = data.draw(st.sampled_from(["put", "add", "insert", "remove", "append"]))
            if kind == "put":
                o = r.put("m", data.draw(st.sampled_from(KEYS)), data.draw(st.sampled_from([None, 1, "v", [1, 2]])))
            elif kind == "add":
                o = r.add("c", data.draw(st.sampled_from([-3, -1, 1, 2, 5])))
            elif kind == "insert":
                o = r.insert("s", data.draw(st.sampled_from(ELEMS)))
            elif kind == "remove":
                o = r.remove("s", data.draw(st.sampled_from(ELEMS)))
            else:
                o = r.append("l", data.draw(st.integers(0, 1200)), data.draw(st.integers(-5, 5)))
            if o is not None:
                issued.append(o)
                for j in range(n):
                    if j != i:
                        inbox[j].append((i, o))
        elif act in ("deliver", "dup", "drop") and inbox[i]:
            k = data.draw(st.integers(0, len(inbox[i]) - 1))
            sender, o = inbox[i][k]
            if group[sender] != group[i] and act != "drop":
                continue  # partitioned: the message waits
            if act != "dup":
                inbox[i].pop(k)
            if act != "drop":
                try:
                    r.receive(o)
                except OpError:
                    pass  # refused (buffer bound): sync repairs it
        elif act == "sync":
            j = data.draw(st.integers(0, n - 1))
            if j != i and group[i] == group[j]:
                exchange(r, reps[j], rng, data.draw(st.integers(0, 30)), data.draw(st.integers(0, 10)))
        elif act == "merge":
            # state-based gossip: join another replica's whole snapshot
            j = data.draw(st.integers(0, n - 1))
            if j != i and group[i] == group[j]:
                r.merge_snapshot(reps[j].snapshot())
        elif act == "compact":
            how = data.draw(st.sampled_from(["members", "proxy", "arbitrary"]))
            if how == "members":
                r.compact()
            elif how == "proxy":
                st_vv = dict(r.vv)
                for x in reps:
                    for a in st_vv:
                        st_vv[a] = min(st_vv[a], x.vv.get(a, 0))
                r.compact(st_vv)
            else:
                r.compact({a: rng.randbelow(r.vv[a] + 1) for a in r.vv})
        elif act == "partition":
            group = [data.draw(st.integers(0, 1)) for _ in range(n)]
        elif act == "persist":
            stores[i].save(r)
            reps[i] = stores[i].load()
            assert reps[i].state_bytes() == r.state_bytes()

    # heal: everyone meets everyone until nothing changes
    for _ in range(4):
        for i in range(n):
            for j in range(i + 1, n):
                exchange(reps[i], reps[j], rng, 0, 0)
        if len({x.state_bytes() for x in reps}) == 1:
            break
    states = {x.state_bytes() for x in reps}
    assert len(states) == 1

    counters, regs, sets, logs = reference(issued)
    r = reps[0]
    for o in issued:
        op = O.decode(o)
        assert r.vv.get(op[0], 0) >= op[1]
    assert r.counter("c") == counters.get("c", 0)
    for (name, key), (clock, author, value) in regs.items():
        assert r.get(name, key) == value
    assert set(r.members("s")) == sets.get("s", set())
    assert r.readings("l") == logs.get("l", [])
