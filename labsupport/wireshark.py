"""Wireshark's view of a saved capture: what tshark prints, or how to open the file in Wireshark.

The course's servers listen on ports the operating system picks, so Wireshark cannot tell from
the port that the traffic is HTTP: tshark is told with ``-d tcp.port==PORT,http`` (in Wireshark:
Analyze > Decode As...). ``-o http.desegment_body:FALSE`` shows each response as its bytes
arrive, so a stream that never ends (SSE) still shows its head and each piece of its body.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

TIMEOUT = 30.0  # s; tshark reads a course capture in well under a second
COLUMNS = ("frame.number", "frame.time_relative", "tcp.srcport", "tcp.dstport", "_ws.col.Protocol", "_ws.col.Info")


def server_port(path: str | Path) -> int:
    """The port the clients connected to: where the capture's first packet, a SYN, is going."""
    from scapy.layers.inet import TCP
    from scapy.utils import PcapNgReader

    with PcapNgReader(str(path)) as capture:
        return int(capture.read_packet()[TCP].dport)


def tshark_view(path: str | Path, display_filter: str = "http", *, follow: int | None = None,
                lines: int = 14) -> None:
    """Print tshark's view of the capture: the packets that match ``display_filter``, one a line, or
    the text of TCP stream number ``follow``; at most ``lines`` lines. Without tshark, how to open
    the file in Wireshark."""
    port = server_port(path)
    command = ["tshark", "-r", str(path), "-d", f"tcp.port=={port},http", "-o", "http.desegment_body:FALSE"]
    command += ["-q", "-z", f"follow,tcp,ascii,{follow}"] if follow is not None else ["-Y", display_filter]
    if shutil.which("tshark") is None:
        print(f"tshark is not installed here. Open {Path(path).resolve()} in Wireshark (File > Open).\n"
              f"Port {port} is not one Wireshark knows, so tell it the traffic is HTTP:\n"
              f"Analyze > Decode As..., TCP port {port}, HTTP.\n"
              + ("Then Analyze > Follow > TCP Stream." if follow is not None
                 else f"Then type this display filter: {display_filter}"))
        return
    fields = [] if follow is not None else ["-T", "fields", *(arg for f in COLUMNS for arg in ("-e", f))]
    done = subprocess.run(command + fields, capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode:
        print(f"tshark could not read {path}: {done.stderr.strip()}")
        return
    found = [line.rstrip() for line in done.stdout.splitlines()
             if line.strip() and not line.startswith(("====", "Follow:", "Filter:"))]  # tshark's frame around a stream
    if follow is None:  # number, seconds, from port -> to port, protocol, summary
        found = ["{:>4} {:>9.6f}  {:>5} → {:<5}  {:<10} {}".format(int(n), float(t), src, dst, protocol, info)
                 for n, t, src, dst, protocol, info in (line.split("\t") for line in found)]
        command_note = "\n(one packet a line: number, seconds, from port → to port, protocol, summary)"
    else:
        command_note = ""
    print("$ " + shlex.join(command) + command_note)
    print("\n".join(found[:lines]))
    if len(found) > lines:
        print(f"... and {len(found) - lines} more lines")
