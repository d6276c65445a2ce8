"""The MLLP framer on its own: partial frames, several per read, garbage
between frames, a restarted frame, the size limit."""

from __future__ import annotations

from hub.mllp import Frame, MllpFramer, Oversize, frame


def payloads(items) -> list[bytes]:  # noqa: ANN001
    return [i.payload for i in items if isinstance(i, Frame)]


def test_one_frame_split_across_reads_byte_by_byte():
    f = MllpFramer()
    data = frame("MSH|a\rPID|b\r")
    out = []
    for i in range(len(data)):
        out += f.feed(data[i:i + 1])
    assert payloads(out) == [b"MSH|a\rPID|b\r"]


def test_several_frames_in_one_read_with_garbage_between():
    f = MllpFramer()
    out = f.feed(b"junk" + frame("one") + b"\r\n\x00" + frame("two") + frame("three")[:3])
    assert payloads(out) == [b"one", b"two"]
    assert payloads(f.feed(frame("three")[3:])) == [b"three"]
    assert f.discarded == 7


def test_end_block_split_between_reads():
    """The frame is whole at its FS; the CR that follows in the next read is the end block's, not a
    byte outside a frame."""
    f = MllpFramer()
    assert payloads(f.feed(b"\x0bMSH|x\x1c")) == [b"MSH|x"]
    assert f.feed(b"\x0d") == []
    assert payloads(f.feed(frame("MSH|y"))) == [b"MSH|y"]
    assert f.discarded == 0


def test_a_frame_ended_by_fs_alone_is_read_and_the_next_one_too():
    """Some engines end a frame with FS and no CR: each frame is still read (before, the first waited
    for a CR, and the next start block threw it away unanswered)."""
    f = MllpFramer()
    assert payloads(f.feed(b"\x0bMSH|one\x1c\x0bMSH|two\x1c")) == [b"MSH|one", b"MSH|two"]
    assert payloads(f.feed(b"\x0bMSH|three\x1c\x0d\x0bMSH|four\x1c")) == [b"MSH|three", b"MSH|four"]
    assert f.discarded == 0
    # A byte other than CR after the FS is outside any frame, counted as before.
    assert payloads(f.feed(b"x" + frame("MSH|five"))) == [b"MSH|five"]
    assert f.discarded == 1


def test_a_new_start_block_abandons_an_unfinished_frame():
    f = MllpFramer()
    assert payloads(f.feed(b"\x0bMSH|half" + frame("MSH|whole"))) == [b"MSH|whole"]


def test_a_frame_over_the_limit_is_reported_once():
    f = MllpFramer(max_frame_bytes=10)
    out = f.feed(b"\x0bMSH|" + b"x" * 20)
    assert len(out) == 1 and isinstance(out[0], Oversize) and out[0].head.startswith(b"MSH|")
    assert f.feed(b"y" * 5 + b"\x1c\x0d") == []  # the rest of it is dropped
    assert payloads(f.feed(frame("MSH|ok"))) == [b"MSH|ok"]
    f = MllpFramer(max_frame_bytes=10)
    out = f.feed(frame("MSH|" + "x" * 20))
    assert len(out) == 1 and isinstance(out[0], Oversize)
