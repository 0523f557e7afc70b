# Runs on CPython and in the MicroPython VM: firmware/platform.py's heap
# keeping. On MicroPython the node holds one free block for the next
# datagram read (stock sockets allocate the whole read size in one piece)
# and hands it back right before a read; on CPython these are no-ops.
from rig import IS_MICROPYTHON
from firmware import platform

# (runtime.RX_MAX and lan_link._RX_MAX import socket, which the VM lacks;
# tests/host/test_node_runtime.py checks RX_ROOM against them)
READ = 1200


class _OneDatagram:
    def __init__(self, data):
        self.data = data
        self.room_at_read = "unread"

    def recv(self, size):
        self.room_at_read = platform._room
        return self.data[:size]

    def recvfrom(self, size):
        self.room_at_read = platform._room
        return self.data[:size], ("127.0.0.1", 1)


def test_room_for_a_read_is_held_and_handed_back_before_the_read():
    assert platform.RX_ROOM >= READ
    platform.keep_room()
    if not IS_MICROPYTHON:
        assert platform._room is None     # CPython: nothing to keep
        return
    room = platform._room
    assert room is not None and len(room) == platform.RX_ROOM
    platform.keep_room()
    assert platform._room is room         # one block, not one per call
    s = _OneDatagram(b"datagram")
    assert platform.Poller(s).recv(READ) == b"datagram"
    assert s.room_at_read is None         # free when the socket allocates its buffer
    platform.keep_room()
    s = _OneDatagram(b"lan")
    assert platform.Poller(s).recvfrom(READ)[0] == b"lan"
    assert s.room_at_read is None
    platform.keep_room()
    assert platform._room is not None


def test_collect_often_sets_a_threshold_only_in_a_tight_heap():
    if not IS_MICROPYTHON:
        platform.collect_often()   # a no-op on CPython
        return
    import gc
    gc.threshold(-1)
    try:
        gc.collect()
        free = gc.mem_free()
        platform.collect_often()
        t = gc.threshold()
        if free < platform.GC_TIGHT:
            assert platform.GC_EVERY_MIN <= t <= max(platform.GC_EVERY_MIN, free // platform.GC_SHARE), (free, t)
        else:
            assert t == -1, (free, t)   # a roomy heap: no early collections
    finally:
        gc.threshold(-1)   # the rest of the tests run as before


def test_collect_while_booting_sets_the_boot_threshold_only_in_a_tight_heap():
    if not IS_MICROPYTHON:
        platform.collect_while_booting()   # a no-op on CPython
        return
    import gc
    gc.threshold(-1)
    try:
        gc.collect()
        free = gc.mem_free()
        platform.collect_while_booting()
        t = gc.threshold()
        if free < platform.GC_BOOT_TIGHT:
            assert t == platform.GC_EVERY_MIN, (free, t)
        else:
            assert t == -1, (free, t)
        # the running node's threshold replaces it (none in a roomy heap)
        platform.collect_often()
        gc.collect()
        if gc.mem_free() >= platform.GC_TIGHT:
            assert gc.threshold() == -1
    finally:
        gc.threshold(-1)
