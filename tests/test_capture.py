"""The capture parser: known byte streams give the same messages however the reads cut them.

Like the SSE codec's test, every stream is fed whole, one byte at a time, split at every point
into two reads, and in random splits. The messages (kind, label, size) must not change, their
sizes must add up to the stream, and each message is timed by the reads it came in.
"""

import random

import pytest
from websockets.frames import Frame, Opcode

from labsupport.capture import DirectionParser, messages
from labsupport.patterns.sse_codec import encode_comment, encode_event, encode_retry


def splittings(stream: bytes):
    yield [stream]
    yield [stream[i:i + 1] for i in range(len(stream))]
    step = 1 if len(stream) < 4000 else 97  # a 64-bit-length frame: cut it in fewer places
    for cut in range(1, len(stream), step):
        yield [stream[:cut], stream[cut:]]
    rng = random.Random(len(stream))
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), min(4, len(stream) - 1)))
        yield [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]


def parse(direction: str, chunks: list[bytes]):
    parser = DirectionParser(direction)
    return [m for t, chunk in enumerate(chunks) for m in parser.feed(chunk, read=t, delivered=t + 0.5)]


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


REQUEST = b"GET /latest HTTP/1.1\r\nHost: 127.0.0.1:1\r\nAccept: */*\r\n\r\n"
ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n{"seq": 3, "value": 1}'
NOT_MODIFIED = b'HTTP/1.1 304 Not Modified\r\nEtag: "abc"\r\n\r\n'
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
UPGRADE = (b"GET /feed HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SWITCHING = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def frame(opcode, data: bytes, *, mask: bool, fin: bool = True, rsv1: bool = False) -> bytes:
    if not rsv1:
        return Frame(opcode, data, fin).serialize(mask=mask)
    raw = bytearray(Frame(opcode, data, fin).serialize(mask=mask))
    raw[0] |= 0b01000000  # as permessage-deflate marks a compressed message
    return bytes(raw)


STREAMS = {
    "three polls on keep-alive, up": ("up", REQUEST * 3, [("request", "GET /latest")] * 3),
    "three answers, one a 304": ("down", ANSWER + NOT_MODIFIED + ANSWER,
                                 [("response", "200 OK"), ("response", "304 Not Modified"), ("response", "200 OK")]),
    "conditional poll and a close": ("up", REQUEST.replace(b"Accept", b'If-None-Match: "abc"\r\nAccept')
                                     + REQUEST.replace(b"Accept", b"Connection: close\r\nAccept"),
                                     [("request", "GET /latest (If-None-Match)"), ("request", "GET /latest (Connection: close)")]),
    "a reconnect with Last-Event-ID": ("up", b"GET /events HTTP/1.1\r\nLast-Event-ID: 24\r\n\r\n",
                                       [("request", "GET /events (Last-Event-ID: 24)")]),
    "an SSE stream to its end, then a poll": (
        "down", SSE_HEAD + chunked(encode_retry(200)) + b"".join(chunked(encode_event(f"v{i}", id=str(i)))
                                                                for i in range(1, 4))
        + chunked(encode_comment("keep-alive")) + chunked(encode_event("two\nlines", event="tick"))
        + b"0\r\n\r\n" + ANSWER,
        [("response head", "200 OK"), ("retry", "retry: 200 ms"), ("event", "message id=1"),
         ("event", "message id=2"), ("event", "message id=3"), ("comment", "comment (heartbeat)"),
         ("event", "tick id=3"), ("end of body", "end of body"), ("response", "200 OK")]),
    "two events in one chunk": ("down", SSE_HEAD + chunked(encode_event("a", id="1") + encode_event("b", id="2")),
                                [("response head", "200 OK"), ("event", "message id=1"), ("event", "message id=2")]),
    "pushed updates, one chunk each": (
        "down", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b'{"seq": 1}\n')
        + chunked(b'{"seq": 2}\n') + b"0\r\n\r\n",
        [("response head", "200 OK"), ("chunk", "chunk"), ("chunk", "chunk"), ("end of body", "end of body")]),
    "WebSocket client: handshake, then masked frames": (
        "up", UPGRADE + frame(Opcode.TEXT, b"hello", mask=True) + frame(Opcode.BINARY, b"x" * 300, mask=True)
        + frame(Opcode.TEXT, b"par", mask=True, fin=False) + frame(Opcode.CONT, b"ts", mask=True)
        + frame(Opcode.PONG, b"", mask=True) + frame(Opcode.CLOSE, b"\x03\xe8", mask=True),
        [("request", "GET /feed (Upgrade: websocket)"), ("frame", "text"), ("frame", "binary"),
         ("frame", "text (more to come)"), ("frame", "continuation"), ("frame", "pong"), ("frame", "close 1000")]),
    "WebSocket server: 101, then frames": (
        "down", SWITCHING + frame(Opcode.TEXT, b"{}", mask=False) + frame(Opcode.TEXT, b"y" * 70000, mask=False)
        + frame(Opcode.TEXT, b"zz", mask=False, rsv1=True) + frame(Opcode.PING, b"", mask=False),
        [("response", "101 Switching Protocols (Upgrade: websocket)"), ("frame", "text"), ("frame", "text"),
         ("frame", "text (compressed)"), ("frame", "ping")]),
    "NATS client: connect, publish, fetch, ack": (
        "up", b'CONNECT {"verbose":false}\r\nPING\r\nSUB _INBOX.a.* 1\r\n'
        b"PUB jobs.registration _INBOX.a.1 5\r\nhello\r\n"
        b"HPUB jobs.x _INBOX.a.2 28 33\r\nNATS/1.0\r\nNats-Msg-Id: 1\r\n\r\nhello\r\n"
        b'PUB $JS.API.CONSUMER.MSG.NEXT.EMAIL.email _INBOX.a.3 11\r\n{"batch":1}\r\n'
        b"PUB $JS.ACK.EMAIL.email.1.1.1.170.0 4\r\n+ACK\r\n",
        [("nats", "CONNECT"), ("nats", "PING"), ("nats", "SUB"), ("nats", "publish jobs.registration"),
         ("nats", "publish jobs.x"), ("nats", "fetch"), ("nats", "ack +ACK")]),
    "NATS server: info, PubAck, delivery, redelivery, 408": (
        "down", b'INFO {"server_id":"x"}\r\nPONG\r\n'
        b'MSG _INBOX.a.1 1 27\r\n{"stream":"EMAIL", "seq":7}\r\n'
        b"MSG jobs.registration 2 $JS.ACK.EMAIL.email.1.7.7.170.0 5\r\nhello\r\n"
        b"MSG jobs.registration 2 $JS.ACK.EMAIL.email.2.7.8.170.0 5\r\nhello\r\n"
        b"HMSG _INBOX.a.3 1 32 32\r\nNATS/1.0 408 Request Timeout\r\n\r\n\r\n",
        [("nats", "INFO"), ("nats", "PONG"), ("nats", "PubAck seq=7"), ("nats", "delivery"),
         ("nats", "redelivery (try 2)"), ("nats", "status 408")]),
}


@pytest.mark.parametrize("name", STREAMS)
def test_the_same_messages_however_the_reads_cut_them(name):
    direction, stream, expected = STREAMS[name]
    whole = parse(direction, [stream])
    assert [(m.kind, m.label) for m in whole] == expected
    # every byte belongs to one message, but for the CRLF that closes an open stream's last chunk:
    # it counts with whatever the stream carries next
    assert len(stream) - sum(m.size for m in whole) in (0, 2)
    for chunks in splittings(stream):
        assert [(m.kind, m.label, m.size) for m in parse(direction, chunks)] == \
               [(m.kind, m.label, m.size) for m in whole], chunks


def test_frame_sizes_are_the_header_rules_of_rfc_6455():
    _, stream, _ = STREAMS["WebSocket server: 101, then frames"]
    sizes = [m.size for m in parse("down", [stream]) if m.kind == "frame"]
    assert sizes == [2 + 2, 2 + 8 + 70000, 2 + 2, 2]  # 7-bit, 64-bit length, unmasked
    _, stream, _ = STREAMS["WebSocket client: handshake, then masked frames"]
    sizes = [m.size for m in parse("up", [stream]) if m.kind == "frame"]
    assert sizes[:2] == [2 + 4 + 5, 2 + 2 + 4 + 300]  # a client's frames carry a 4-byte mask key


def test_a_message_is_timed_from_its_first_read_to_its_last_delivery():
    parser = DirectionParser("down")
    assert parser.feed(ANSWER[:10], read=1.0, delivered=1.2) == []
    [answer] = parser.feed(ANSWER[10:], read=2.0, delivered=2.3)
    assert (answer.sent, answer.arrived, answer.size) == (1.0, 2.3, len(ANSWER))
    assert answer.first.startswith(b"HTTP/1.1 200 OK")


def test_an_event_is_timed_by_its_own_chunk_not_the_framing_before_it():
    parser = DirectionParser("down")
    parser.feed(SSE_HEAD + chunked(encode_event("a", id="1")), read=0.0, delivered=0.0)
    [event] = parser.feed(chunked(encode_event("b", id="2")), read=5.0, delivered=5.1)
    assert (event.sent, event.arrived) == (5.0, 5.1)
    assert event.first == b"b"


def test_both_directions_of_a_connection_in_the_order_sent():
    chunks = [("up", 0.0, 0.1, REQUEST), ("down", 0.2, 0.3, ANSWER), ("up", 1.0, 1.1, REQUEST),
              ("down", 1.2, 1.3, NOT_MODIFIED)]
    assert [(m.direction, m.kind) for m in messages(chunks)] == [("up", "request"), ("down", "response")] * 2


@pytest.mark.parametrize("direction,stream", [
    ("down", SWITCHING + b"\x8f\x00garbage"),  # opcode 15 is reserved
    ("up", UPGRADE + frame(Opcode.TEXT, b"unmasked", mask=False)),  # a client must mask
    ("down", SSE_HEAD + b"zz\r\nnot hex\r\n"),
])
def test_bytes_that_break_the_protocol_are_shown_as_bytes_not_raised(direction, stream):
    found = parse(direction, [stream[:len(stream) // 2], stream[len(stream) // 2:]])
    assert found[-1].kind == "bytes"
    assert sum(m.size for m in found) == len(stream)
