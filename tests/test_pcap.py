"""Capture files: consistent TCP conversations, and Wireshark's own dissectors agree with the course.

The first tests check the synthesised segments without any tool. The tshark tests save captures of
a polling, an SSE and a WebSocket run and count, with tshark's own output, the requests,
responses, SSE events and WebSocket frames (opcode and mask bit) that ``capture`` counts in the
meter's log; the same check must fail when one frame is dropped from a capture (with Wireshark's
``editcap``). They are skipped with a message where tshark is not installed
(``python3 course.py test`` installs it on Debian when run as root).
"""

import json
import re
import shutil
import subprocess
from collections import Counter

import pytest

from labsupport import tshark_view
from labsupport.capture import messages
from labsupport.experiments.polling import run_polling
from labsupport.experiments.sse import run_sse
from labsupport.experiments.websocket import run_websocket
from labsupport.pcap import MSS, Leg, Segment, frame, legs, save_capture, segments
from labsupport.wire import Connection

from conftest import scaled

TSHARK, EDITCAP = shutil.which("tshark"), shutil.which("editcap")
needs_tshark = pytest.mark.skipif(
    TSHARK is None or EDITCAP is None,
    reason="tshark is not installed (Debian: apt-get install tshark; python3 course.py test installs it as root)")


# -- the segments, without any tool ---------------------------------------------------------------

def check_numbers(conversation) -> None:
    """Each side's sequence numbers run on without a gap; each ACK covers what the other side had sent."""
    isn = {s.up: s.seq for s in conversation if "S" in s.flags}
    sent = {up: isn[up] + 1 for up in isn}
    for s in conversation[1:]:
        if "S" not in s.flags:
            assert s.seq == sent[s.up] % 2**32, s
            assert s.ack == sent[not s.up] % 2**32, s
        sent[s.up] += len(s.payload) + ("F" in s.flags)


def test_a_conversation_has_consistent_numbers_and_cuts_long_chunks_at_the_mss():
    big = bytes(150_000)
    leg = Leg(0, 50000, 40000, opened=10.0,
              chunks=[(True, 10.001, b"GET / HTTP/1.1\r\n\r\n"), (False, 10.002, big), (True, 10.003, b"x")],
              ends={True: 10.004, False: 10.005}, closed=10.006)
    conversation = segments(leg, "connection 0")
    assert [s.flags for s in conversation[:3]] == ["S", "SA", "A"] and conversation[0].comment == "connection 0"
    assert [s.time for s in conversation] == sorted(s.time for s in conversation)
    check_numbers(conversation)
    pieces = [s for s in conversation if not s.up and s.payload]
    assert [len(s.payload) for s in pieces] == [MSS, MSS, 150_000 - 2 * MSS] and b"".join(s.payload for s in pieces) == big
    assert [s.flags for s in pieces] == ["A", "A", "PA"]  # PSH on the last segment of what was written
    assert [(s.up, s.flags) for s in conversation[-3:]] == [(True, "FA"), (False, "FA"), (True, "A")]


def test_how_a_conversation_ends():
    def ending(**kwargs):
        leg = Leg(0, 50000, 40000, opened=1.0, chunks=[(True, 1.1, b"hello"), (False, 1.2, b"there")], **kwargs)
        conversation = segments(leg)
        check_numbers(conversation)
        return conversation

    assert ending(closed=2.0, cut=True)[-1].flags == "RA"  # the meter cut it: a reset from its side
    assert ending(closed=2.0)[-1].flags == "RA"  # stopped with no end of stream either way
    one_end = ending(ends={True: 1.5}, closed=2.0)  # the client ended its stream, the server closed in turn
    assert [(s.up, s.flags, s.time) for s in one_end[-3:]] == [(False, "A", 1.5), (False, "FA", 2.0), (True, "A", 2.0)]
    cut_short = ending(ends={True: 1.5, False: 1.6}, closed=2.0, complete=False)
    assert not any(set(s.flags) & {"F", "R"} for s in cut_short)  # the log filled up: the file says so
    assert "log filled up" in cut_short[-1].comment
    assert not any(set(s.flags) & {"F", "R"} for s in ending())  # still open when the run was saved


@pytest.mark.parametrize("flags, payload", [("S", b""), ("SA", b""), ("PA", b"GET / HTTP/1.1\r\n\r\n"),
                                           ("A", bytes(range(256)) * 255 + b"odd"), ("FA", b""), ("RA", b"")])
def test_frames_are_the_bytes_scapy_builds(flags, payload):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    segment = Segment(1.0, flags != "SA", flags, 123456789, 987654321 if "A" in flags else 0, payload)
    ports = (50000, 40000) if segment.up else (40000, 50000)
    options = [("MSS", MSS), ("NOP", None), ("WScale", 7)] if "S" in flags else []
    reference = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") /
                 IP(src="127.0.0.1", dst="127.0.0.1", flags="DF", id=7, ttl=64) /
                 TCP(sport=ports[0], dport=ports[1], flags=flags, seq=segment.seq, ack=segment.ack, window=65535,
                     options=options) / payload)
    assert frame(segment, 50000, 40000, ip_id=7) == bytes(reference)


def test_a_run_without_logged_bytes_says_how_to_log_them(tmp_path):
    with pytest.raises(ValueError, match=r"log_bytes=.*memory"):
        save_capture(tmp_path / "none.pcapng", [Connection(id=0, opened=0.0)], pattern="nothing logged")
    assert not (tmp_path / "none.pcapng").exists()


def test_bytes_the_link_still_held_at_the_close_never_reached_the_client(tmp_path):
    held = Connection(id=0, opened=1.0, closed=1.5, bytes_up=5, bytes_down=10, ports=(50000, 40000),
                      chunks=[("up", 1.1, 1.12, b"hello"), ("down", 1.2, 1.3, b"there"), ("down", 1.4, 1.6, b"again")],
                      ends={"up": (1.45, 1.47)})
    (leg,) = legs([held])
    assert [data for _, _, data in leg.chunks] == [b"hello", b"there"]


def test_the_file_reads_back_with_its_comments(tmp_path):
    from scapy.utils import rdpcap

    result = run_polling(0.1, rate=5, clients=1, duration=0.3)
    path = result.save_capture(tmp_path / "polls.pcapng")
    packets = rdpcap(str(path))
    sent = b"".join(bytes(p["TCP"].payload) for p in packets if p["TCP"].sport == result.connections.client_port[0])
    assert sent == b"".join(data for way, _, _, data in result.captures[0] if way == "up")
    assert b"pattern: polling" in packets[0].comments[0] and b"client's leg" in packets[0].comments[0]


# -- what Wireshark sees --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs():
    return {"polling": run_polling(0.1, rate=5, clients=2, duration=0.5, keep_alive=False),
            "sse": run_sse(rate=20, clients=2, duration=0.5),
            "websocket": run_websocket(rate=20, clients=2, duration=0.5)}


OPCODES = {"continuation": 0, "text": 1, "binary": 2, "close": 8, "ping": 9, "pong": 10}


def course_counts(result) -> dict:
    """What the course's ``capture`` module finds in the meter's log."""
    found = [m for chunks in result.captures.values() for m in messages(chunks)]
    return {"requests": sum(m.kind in ("request", "request head") for m in found),
            "responses": sum(m.kind in ("response", "response head") for m in found),
            "events": sum(m.kind == "event" for m in found),
            "frames": Counter((OPCODES[m.label.split()[0]], m.direction == "up") for m in found if m.kind == "frame")}


def tshark(path, port: int, *args: str) -> str:
    """tshark's output: the port is random, so it is decoded as HTTP; a body is shown as it arrives;
    checksums are checked (a bad one is an Error)."""
    done = subprocess.run([TSHARK, "-r", str(path), "-d", f"tcp.port=={port},http", "-o", "http.desegment_body:FALSE",
                           "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", *args], capture_output=True, text=True, timeout=scaled(60))
    assert done.returncode == 0, done.stderr
    return done.stdout


def tshark_counts(path, port: int) -> tuple[dict, list[str]]:
    """The same counts from tshark's dissectors (HTTP, WebSocket, the `data:` lines of the bodies),
    and the frames that carry them."""
    fields = ["frame.number", "http.request.method", "http.response.code", "http.file_data",
              "websocket.opcode", "websocket.mask"]
    frames = [packet["_source"]["layers"] for packet in json.loads(tshark(
        path, port, "-Y", "http or websocket", "-T", "json", *(arg for f in fields for arg in ("-e", f))))]
    every = {f: [value for layers in frames for value in layers.get(f, [])] for f in fields}
    return ({"requests": len(every["http.request.method"]), "responses": len(every["http.response.code"]),
             "events": sum(len(re.findall(r"^data:", body, re.M)) for body in every["http.file_data"]),
             "frames": Counter((int(op), mask == "1") for op, mask in zip(every["websocket.opcode"],
                                                                            every["websocket.mask"]))},
            every["frame.number"])


@needs_tshark
@pytest.mark.parametrize("drop", [False, True], ids=["whole", "one frame dropped"])
@pytest.mark.parametrize("name", ["polling", "sse", "websocket"])
def test_tshark_counts_what_the_course_counts(runs, name, drop, tmp_path):
    result = runs[name]
    port = int(result.connections.meter_port[0])
    path = result.save_capture(tmp_path / f"{name}.pcapng")
    expected = course_counts(result)
    assert expected["requests"] >= 2 and (expected["events"] >= 10 if name == "sse" else True)
    counted, carrying = tshark_counts(path, port)
    if drop:  # the middle one of the frames that carry a message
        subprocess.run([EDITCAP, str(path), str(tmp_path / "dropped.pcapng"), carrying[len(carrying) // 2]],
                       check=True, timeout=scaled(60))
        path = tmp_path / "dropped.pcapng"
        counted, _ = tshark_counts(path, port)
    expert = tshark(path, port, "-q", "-z", "expert")
    if drop:
        assert counted != expected and "segment(s) not captured" in expert
    else:
        assert counted == expected
        assert not re.search(r"^(Errors|Warns) \(", expert, re.M) and "Malformed" not in expert, expert


def test_the_view_says_how_to_open_the_file_where_tshark_is_missing(runs, tmp_path, monkeypatch, capsys):
    path = runs["websocket"].save_capture(tmp_path / "ws.pcapng")
    port = int(runs["websocket"].connections.meter_port[0])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    tshark_view(path, "websocket")
    told = capsys.readouterr().out
    assert "Open" in told and f"Decode As..., TCP port {port}, HTTP" in told and "websocket" in told


@needs_tshark
def test_the_view_shows_tsharks_lines(runs, tmp_path, capsys):
    tshark_view(runs["websocket"].save_capture(tmp_path / "ws.pcapng"), "http or websocket", lines=4)
    shown = capsys.readouterr().out.splitlines()
    packets = shown[2:-1]  # two clients: two handshakes first
    assert shown[0].startswith("$ tshark -r ") and len(packets) == 4 and shown[-1].startswith("... and ")
    assert sum("GET /feed" in line for line in packets) == 2 and sum("101 Switching" in line for line in packets) == 2
