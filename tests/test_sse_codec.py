"""The SSE encoder and parser, checked against sseclient-py on the same byte streams.

Every stream is parsed whole, one byte at a time, split at every point into two reads, and
in random splits: the parser must give the same events however the network cuts the bytes.
Where sseclient-py departs from the HTML standard's event-stream rules, the test says so and
holds the course's parser to the standard.
"""

import random

import pytest
from sseclient import SSEClient

from labsupport.patterns.sse_codec import (EventStreamParser, ServerSentEvent, encode_comment, encode_event,
                                           encode_retry)


def ours(chunks):
    parser = EventStreamParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def theirs(chunks):
    return list(SSEClient(list(chunks)).events())


def splittings(stream: bytes):
    """The same bytes cut into reads in many ways."""
    yield [stream]
    yield [stream[i:i + 1] for i in range(len(stream))]
    for cut in range(1, len(stream)):
        yield [stream[:cut], stream[cut:]]
    rng = random.Random(len(stream))
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), min(3, len(stream) - 1)))
        yield [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]


AGREED = {
    "one event": b"data: hello\n\n",
    "multi-line data": b"data: first\ndata: second\ndata: third\n\n",
    "CRLF line ends": b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",
    "CR line ends": b"data: a\rdata: b\r\rdata: c\r\r",
    "mixed line ends": b"data: a\r\ndata: b\ndata: c\rdata: d\n\ndata: e\r\r",
    "event type": b"event: tick\ndata: 1\n\ndata: 2\n\n",
    "comments as heartbeats": b": heartbeat\n\n:\n\ndata: x\n: in the middle\ndata: y\n\n",
    "no space after the colon": b"data:x\n\ndata:  two spaces keep one\n\n",
    "field without colon": b"data\n\ndata\ndata\n\n",
    "unknown fields are ignored": b"foo: bar\ndata: x\nbaz\n\n",
    "blank events are not dispatched": b"\n\n\n\ndata: x\n\n\n\n",
    "ids on every event": b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
    "colons in the value": b"data: {\"a\": 1}\ndata: http://x:80/\n\n",
    "multi-byte UTF-8": "data: café ✓ 日本\n\ndata: €\n\n".encode(),
    "many events": b"".join(encode_event(f"event {i}\nline 2", id=str(i), event="tick") for i in range(30)),
}


@pytest.mark.parametrize("name", AGREED)
def test_parser_agrees_with_sseclient(name):
    stream = AGREED[name]
    reference = [(e.event, e.data) for e in theirs([stream])]
    assert reference, "every test stream carries at least one event"
    for chunks in splittings(stream):
        assert [(e.event, e.data) for e in ours(chunks)] == reference, chunks
        # sseclient-py's own chunk stitching must agree with itself too (it is the reference)
        assert [(e.event, e.data) for e in theirs(chunks)] == reference, chunks


def test_ids_agree_where_the_event_sets_one():
    stream = AGREED["ids on every event"] + AGREED["many events"]
    assert [e.id for e in ours([stream])] == [e.id for e in theirs([stream])]


# -- where sseclient-py departs from the HTML standard --------------------------------------

def test_crlf_split_across_reads_is_one_line_end():
    events = ours([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert [e.data for e in events] == ["a\nb"]


def test_lf_then_crlf_ends_the_event():
    # Standard: "\n" ends the data line and "\r\n" is the blank line, so two events.
    # sseclient-py only looks for "\n\n", "\r\r" or "\r\n\r\n" and merges them into one.
    stream = b"data: a\n\r\ndata: b\n\n"
    assert [e.data for e in ours([stream])] == ["a", "b"]
    assert [e.data for e in theirs([stream])] == ["a\nb"]  # sseclient-py's deviation


def test_leading_bom_is_dropped_once():
    # Standard: one U+FEFF at the start of the stream is skipped. sseclient-py keeps it, so the
    # first line's field name becomes "\ufeffdata" and the first event is lost.
    stream = "\ufeffdata: a\n\n\ufeffdata: b\n\ndata: c\n\n".encode()
    for chunks in splittings(stream):
        assert [e.data for e in ours(chunks)] == ["a", "c"]  # a later BOM is just a strange field name
    assert [e.data for e in theirs([stream])] == ["c"]  # sseclient-py's deviation


def test_event_cut_off_by_end_of_stream_is_discarded():
    # Standard: an event without its closing blank line is never dispatched.
    stream = b"data: whole\n\ndata: cut off"
    assert [e.data for e in ours([stream])] == ["whole"]
    assert [e.data for e in theirs([stream])] == ["whole", "cut off"]  # sseclient-py's deviation


def test_last_event_id_carries_over_and_ignores_nul():
    # Standard: the id persists until changed; an id containing NUL is ignored.
    # sseclient-py reports an id only on events that carry one, and accepts NUL.
    stream = b"id: 7\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\nid\ndata: d\n\n"
    assert [e.id for e in ours([stream])] == ["7", "7", "7", ""]
    assert [e.id for e in theirs([stream])] == ["7", None, "x\x00y", ""]  # sseclient-py's deviation


def test_id_only_block_moves_last_event_id_without_an_event():
    parser = EventStreamParser()
    assert parser.feed(b"id: 41\n\n") == []
    assert parser.last_event_id == "41"
    parser.feed(b"id: 42\ndata: half an event")  # not finished: not yet the id to resume from
    assert parser.last_event_id == "41"


def test_retry_only_when_all_digits():
    parser = EventStreamParser()
    parser.feed(b"retry: 1500\n\n")
    assert parser.retry == 1500
    for bad in (b"retry: 1.5\n", b"retry: -1\n", b"retry: \n", b"retry: 12a\n", "retry: ٣\n".encode()):
        parser.feed(bad)
        assert parser.retry == 1500, bad
    assert [(e.data, e.retry) for e in theirs([b"retry: soon\ndata: x\n\n"])] == [("x", "soon")]  # sseclient-py keeps it


def test_invalid_utf8_is_replaced_not_fatal():
    # Standard: decode as UTF-8 with replacement characters. sseclient-py raises instead.
    assert [e.data for e in ours([b"data: caf\xe9\n\n"])] == ["caf\ufffd"]
    with pytest.raises(UnicodeDecodeError):
        theirs([b"data: caf\xe9\n\n"])


def test_comments_are_counted():
    parser = EventStreamParser()
    parser.feed(encode_comment("heartbeat") + encode_comment() + b"data: x\n\n")
    assert parser.comments == 2


# -- the encoder --------------------------------------------------------------------------

def test_encoder_round_trips_through_both_parsers():
    samples = ["plain", "two\nlines", "crlf\r\nand cr\rtoo", "", " leading space", "ünï©ødé"]
    stream = b"".join(encode_event(s, id=str(i), event="note") for i, s in enumerate(samples))
    expected = [s.replace("\r\n", "\n").replace("\r", "\n") for s in samples]
    assert [e.data for e in ours([stream])] == expected
    assert [e.data for e in theirs([stream])] == expected
    assert ours([stream])[-1] == ServerSentEvent(expected[-1], "note", str(len(samples) - 1))


def test_encoder_bytes():
    assert encode_event("x") == b"data: x\n\n"
    assert encode_event("x", id="5", event="tick", retry=200) == b"event: tick\nid: 5\nretry: 200\ndata: x\n\n"
    assert encode_retry(3000) == b"retry: 3000\n\n"
    assert encode_comment() == b":\n\n"


@pytest.mark.parametrize("bad", [dict(id="a\nb"), dict(event="x\ry"), dict(id="a\0b"), dict(retry=-5),
                                 dict(retry=1.5)])
def test_encoder_refuses_what_would_break_the_stream(bad):
    with pytest.raises(ValueError):
        encode_event("data", **bad)
