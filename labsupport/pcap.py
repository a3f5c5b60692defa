"""A metered run's connections as a pcapng file, for Wireshark and tshark.

The wire meter relays bytes, not packets, so the file is written from its log (``log_bytes``):
each connection it relayed becomes one TCP conversation on the **client's leg** of the relay
(client <-> meter: 127.0.0.1, the client's own port and the meter's port, the port in the URL the
client was given). It is what a capture on the client's loopback would show:

* the handshake (SYN, SYN-ACK, ACK) in the 30 µs before the meter accepted the connection (the
  kernel completes it before ``accept`` returns);
* what the client sent, at the time the meter **read** it, and what it received, at the time the
  meter **passed it on** (with link latency, that is later than the server sent it);
* one segment per chunk the meter relayed (a chunk over the loopback MSS is cut into several),
  with consistent sequence and acknowledgement numbers; the receiver acknowledges each chunk at
  once, unless its own next segment carries the acknowledgement;
* a FIN each way when that direction's stream ended; where only one side ended its stream, the
  other side's FIN when the meter saw the connection close; a RST from the meter's side where it
  cut the connection or no side ended its stream (the run stopped it); nothing after the point
  where the log filled up (a comment says so), and nothing the meter still held for the client
  (link latency) when the connection closed;
* packet comments: the run on the first packet, each connection on its SYN.

``segments(leg)`` computes a conversation and ``frame`` its bytes, without any I/O. ``write`` hands
them to scapy's ``PcapNgWriter``, which writes the pcapng blocks. Scapy is kept up to date (several
releases a year) and is the reference the tests check the frames against; python-pcapng writes the
format too, but had its last release in 2022. Scapy's writer has no section-header comment, so the
comments are packet comments (Wireshark: Statistics > Capture File Properties lists them all).
"""

from __future__ import annotations

import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
MSS = 65495      # Linux loopback: MTU 65536 less 20 bytes of IPv4 header and 20 of TCP header
WINDOW = 65535   # advertised window, scaled by 2**WSCALE after the handshake (as Linux does on loopback)
WSCALE = 7
HANDSHAKE = 10e-6  # s between the handshake's three packets


@dataclass(frozen=True)
class Leg:
    """One connection on the client's leg, times in seconds since the epoch."""

    id: int
    client_port: int
    meter_port: int
    opened: float
    chunks: list[tuple[bool, float, bytes]]  # (client to meter?, time on this leg, bytes)
    ends: dict[bool, float] = field(default_factory=dict)  # client to meter? -> when that FIN crossed
    closed: float | None = None
    cut: bool = False
    complete: bool = True  # every byte it carried is in the log


@dataclass(frozen=True)
class Segment:
    """One TCP segment: ``flags`` in scapy's letters (S, SA, A, PA, FA, RA)."""

    time: float
    up: bool  # client to meter
    flags: str
    seq: int
    ack: int
    payload: bytes = b""
    comment: str = ""


def segments(leg: Leg, comment: str = "") -> list[Segment]:
    """The TCP conversation of one connection, from the handshake to its close, in time order."""
    isn = {up: zlib.crc32(f"{leg.client_port} {leg.meter_port} {up}".encode()) for up in (True, False)}
    sent = {up: isn[up] + 1 for up in (True, False)}  # the next sequence number each side sends

    def seg(at: float, up: bool, flags: str, payload: bytes = b"", note: str = "") -> Segment:
        return Segment(at, up, flags, sent[up] % 2**32, sent[not up] % 2**32 if "A" in flags else 0, payload, note)

    t0 = leg.opened - 3 * HANDSHAKE
    out = [Segment(t0, True, "S", isn[True], 0, comment=comment),
           Segment(t0 + HANDSHAKE, False, "SA", isn[False], (isn[True] + 1) % 2**32),
           Segment(t0 + 2 * HANDSHAKE, True, "A", sent[True], sent[False])]
    steps = sorted([(at, up, data) for up, at, data in leg.chunks] +
                   ([(at, up, None) for up, at in leg.ends.items()] if leg.complete else []),
                   key=lambda step: step[0])
    for i, (at, up, data) in enumerate(steps):
        if data is None:
            out.append(seg(at, up, "FA"))
            sent[up] += 1
        else:
            for start in range(0, len(data), MSS):
                piece = data[start:start + MSS]
                out.append(seg(at, up, "PA" if start + MSS >= len(data) else "A", piece))
                sent[up] += len(piece)
        if not (i + 1 < len(steps) and steps[i + 1][1] != up):  # the receiver says nothing next: a pure ACK
            out.append(seg(at, not up, "A"))
    if not leg.complete:
        out[-1] = _noted(out[-1], "the meter's log filled up here: the rest of this connection is not in the file")
    elif leg.closed is not None:
        closed = max(leg.closed, out[-1].time)
        if leg.cut or not leg.ends:
            why = "the meter cut this connection" if leg.cut else "the connection ended with no end of stream either way"
            out.append(seg(closed, False, "RA", note=why))
        elif len(leg.ends) == 1:  # one side ended its stream, and the other closed its socket in turn
            (ended,) = leg.ends
            out.append(seg(closed, not ended, "FA"))
            sent[not ended] += 1
            out.append(seg(closed, ended, "A"))
    return out


def _noted(segment: Segment, note: str) -> Segment:
    return Segment(segment.time, segment.up, segment.flags, segment.seq, segment.ack, segment.payload,
                   "; ".join(filter(None, [segment.comment, note])))


def legs(source) -> list[Leg]:
    """The client's legs of a run: a ``Result``, or a list of the meter's ``Connection`` objects."""
    if hasattr(source, "captures"):  # a Result: times are seconds since its start
        zero = source.started_at
        return [Leg(int(row.id), int(row.client_port), int(row.meter_port), zero + row.opened,
                    _on_leg(source.captures.get(int(row.id), []), zero, row.closed),
                    {up: zero + at for up, at in ((True, row.end_up), (False, row.end_down)) if _known(at)},
                    zero + row.closed if _known(row.closed) else None, bool(row.cut),
                    _complete(source.captures.get(int(row.id), []), row.bytes_up, row.bytes_down))
                for row in source.connections.itertuples()]
    zero = time.time() - time.monotonic()  # the meter's times are on the monotonic clock
    return [Leg(c.id, *c.ports, zero + c.opened, _on_leg(c.chunks or [], zero, c.closed),
                {way == "up": zero + (read if way == "up" else passed) for way, (read, passed) in c.ends.items()},
                None if c.closed is None else zero + c.closed, c.cut, _complete(c.chunks or [], c.bytes_up, c.bytes_down))
            for c in source]


def _known(at) -> bool:
    return at is not None and at == at  # None and NaN mean it did not happen


def _on_leg(chunks: list, zero: float, closed: float | None) -> list[tuple[bool, float, bytes]]:
    """Each chunk when it crossed the client's leg: read from the client, or passed on to it.

    A chunk due after the connection closed was still held by the link's latency: it never crossed.
    """
    return [(way == "up", zero + at, data) for way, read, delivered, data in chunks
            if (at := read if way == "up" else delivered) <= (closed if _known(closed) else at)]


def _complete(chunks: list, bytes_up: int, bytes_down: int) -> bool:
    logged = {way: sum(len(data) for w, _, _, data in chunks if w == way) for way in ("up", "down")}
    return logged["up"] == bytes_up and logged["down"] == bytes_down


def logged(source) -> bool:
    """Whether the run kept any bytes to write."""
    if hasattr(source, "captures"):
        return bool(source.captures)
    return any(c.chunks for c in source)


NOT_LOGGED = ("This run's wire meter kept no bytes, so there is no capture to save. A meter logs bytes only "
              "when asked, with log_bytes=N: it keeps every chunk it relays, up to N bytes over all its "
              "connections, so the log costs up to N bytes of memory, and it stops logging when full. "
              "The course's runs that draw ladders log up to 2 MB each; runs that only count bytes log none. "
              "For a meter of your own: start_meter(name, server, log_bytes=2_000_000).")


def save_capture(path: str | Path, source, *, pattern: str, run: str = "") -> Path:
    """Write ``source``'s connections (a ``Result`` or the meter's connections) to ``path`` as pcapng."""
    if not logged(source):
        raise ValueError(NOT_LOGGED)
    path = Path(path)
    write(path, legs(source), f"pattern: {pattern}" + (f"; run: {run}" if run else ""))
    return path


def write(path: Path, all_legs: list[Leg], comment: str) -> None:
    """Every leg's segments in time order, as Ethernet frames on loopback in one pcapng file."""
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter

    first = (f"{comment}. Written by the course from its wire meter's log: the client's leg (client <-> meter), "
             "bytes from the client timed when the meter read them, bytes to it when the meter passed them on")
    timeline = sorted(((s, leg) for leg in all_legs for s in segments(
        leg, f"connection {leg.id}: client port {leg.client_port}, meter port {leg.meter_port}")),
        key=lambda pair: pair[0].time)
    with PcapNgWriter(str(path)) as out:
        for i, (s, leg) in enumerate(timeline):
            raw = frame(s, leg.client_port, leg.meter_port, ip_id=i)
            notes = ([first] if i == 0 else []) + ([s.comment] if s.comment else [])
            if notes:  # a packet object carries comments (and, first, tells the writer the link type)
                packet = Ether(raw)
                packet.time, packet.comments = s.time, [note.encode() for note in notes]
                out.write(packet)
            else:
                out.write_packet(raw, sec=s.time)


# -- the bytes of one frame: Ethernet (as Linux shows loopback), IPv4 (RFC 791), TCP (RFC 9293) --------
#
# Written by hand: scapy builds the same bytes (the tests compare them) but takes about 1 ms a packet,
# and a run's log can hold tens of thousands of chunks.

_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}
_SYN_OPTIONS = struct.pack("!BBHBBBB", 2, 4, MSS, 1, 3, 3, WSCALE)  # MSS, NOP, window scale
_ADDRESS = socket.inet_aton(LOOPBACK)


def frame(s: Segment, client_port: int, meter_port: int, ip_id: int = 0) -> bytes:
    """One segment as an Ethernet frame from 127.0.0.1 to 127.0.0.1, checksums included."""
    ports = (client_port, meter_port) if s.up else (meter_port, client_port)
    options = _SYN_OPTIONS if "S" in s.flags else b""
    flags = sum(_FLAGS[f] for f in s.flags)
    tcp = struct.pack("!HHIIBBHHH", *ports, s.seq, s.ack, (20 + len(options)) // 4 << 4, flags, WINDOW, 0, 0)
    tcp += options + s.payload
    pseudo = _ADDRESS + _ADDRESS + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id & 0xFFFF, 0x4000, 64, socket.IPPROTO_TCP, 0,
                     _ADDRESS, _ADDRESS)  # version 4, 20-byte header; 0x4000: don't fragment; TTL 64
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes(12) + b"\x08\x00" + ip + tcp  # zero MAC addresses, as on Linux's loopback; then IPv4


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
