# Datagram and stream framing, on CPython and in the MicroPython VM.
from rig import raises
from shared_protocol.wire import framing
from shared_protocol.errors import LocalError


def _messages():
    return [bytes([i]) * (1 + (i * 37) % 300) for i in range(12)]


def test_whole_and_byte_at_a_time_give_the_same_frames():
    msgs = _messages()
    stream = b"".join(framing.frame(m) for m in msgs)
    whole = framing.StreamDecoder(limit=400)
    assert whole.feed(stream) == msgs
    single = framing.StreamDecoder(limit=400)
    got = []
    for i in range(len(stream)):
        got += single.feed(stream[i:i + 1])
    assert got == msgs
    # odd chunk sizes too
    for step in (2, 3, 7, 64, 401):
        d = framing.StreamDecoder(limit=400)
        got = []
        for i in range(0, len(stream), step):
            got += d.feed(stream[i:i + step])
        assert got == msgs, step


def test_partial_frame_consumes_nothing_and_truncation_at_every_offset():
    msg = b"hello, field"
    data = framing.frame(msg) + framing.frame(b"second")
    first_end = 2 + len(msg)
    for cut in range(len(data)):
        d = framing.StreamDecoder()
        frames = d.feed(data[:cut])
        # a frame appears only when it is complete; the rest stays buffered
        assert frames == ([msg] if cut >= first_end else []), cut
        assert d.buffered() == (cut - first_end if cut >= first_end else cut)
        d.receive_data(b"")  # end of input
        if d.buffered():
            e = raises(framing.FrameError, d.next_frame)
            assert e.code == framing.TRUNCATED
        else:
            assert d.next_frame() is None


def test_over_long_length_is_rejected_before_buffering_the_frame():
    d = framing.StreamDecoder(limit=100)
    d.receive_data(b"\x00\x65")  # declares 101
    e = raises(framing.FrameError, d.next_frame)
    assert e.code == framing.OVERSIZE
    # sticky: the stream cannot resynchronise after a framing error
    assert raises(framing.FrameError, d.next_frame).code == framing.OVERSIZE
    assert raises(framing.FrameError, d.receive_data, b"x").code == framing.OVERSIZE
    d2 = framing.StreamDecoder(limit=100)
    assert raises(framing.FrameError, d2.feed, b"\xff\xff" + b"x" * 10).code == framing.OVERSIZE


def test_empty_frame_is_an_error():
    assert raises(framing.FrameError, framing.StreamDecoder().feed, b"\x00\x00").code == framing.EMPTY
    assert raises(framing.FrameLimitError, framing.frame, b"").code == framing.EMPTY


def test_buffer_is_bounded():
    d = framing.StreamDecoder(limit=10)
    assert d.capacity == 24
    big = framing.frame(b"a" * 10) * 10
    taken = d.receive_data(big)
    assert taken == 24 and d.free() == 0
    # feed() drains as it goes, so any amount passes through the fixed buffer
    d2 = framing.StreamDecoder(limit=10)
    assert d2.feed(big) == [b"a" * 10] * 10


def test_send_side_limits():
    assert raises(framing.FrameLimitError, framing.frame, b"x" * 11, 10).code == framing.OVERSIZE
    assert isinstance(raises(framing.FrameLimitError, framing.frame, b"x" * 11, 10), LocalError)
    assert framing.datagram(b"x" * framing.DATAGRAM_MAX) == b"x" * framing.DATAGRAM_MAX
    assert raises(framing.FrameLimitError, framing.datagram, b"x" * (framing.DATAGRAM_MAX + 1)).code == framing.OVERSIZE
    assert raises(framing.FrameError, framing.check_datagram, b"").code == framing.EMPTY
    assert raises(framing.FrameError, framing.check_datagram, b"x" * 1201).code == framing.OVERSIZE
    assert raises(framing.FrameLimitError, framing.StreamDecoder, 0).code == framing.OVERSIZE
    assert raises(framing.FrameLimitError, framing.StreamDecoder, 70000).code == framing.OVERSIZE


def test_data_after_end_of_input_is_refused():
    d = framing.StreamDecoder()
    d.receive_data(b"")
    assert raises(LocalError, d.receive_data, b"\x00\x01a").code == "eof"
