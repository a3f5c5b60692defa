"""Chapter 7's C10K experiment: idle connections held by a pattern's server in its own process."""

import asyncio

import pytest

from labsupport import LabError, lab
from labsupport.experiments import connections
from labsupport.experiments.connections import hold_idle_connections
from labsupport.plots import idle_connections
from labsupport.patterns import websocket
from labsupport.server_process import ServerProcess

resource = pytest.importorskip("resource")  # the open-files limit is a POSIX idea


@pytest.mark.parametrize("pattern", connections.PATTERNS)
def test_each_push_pattern_holds_idle_connections_and_its_memory_grows_with_them(pattern):
    holding = hold_idle_connections(pattern, 300, steps=2)
    assert list(holding.table()["connections"]) == [0, 150, 300]
    assert holding.table()["rss_bytes"].iloc[-1] > holding.table()["rss_bytes"].iloc[0]
    assert 500 < holding.bytes_per_connection < 200_000  # some kB each: neither nothing nor absurd
    assert holding.summary()["connections"] == 300 and holding.open_seconds > 0
    assert idle_connections(holding).data[0].x[-1] == 300


def test_a_websocket_opening_request_is_answered_with_101():
    async def scenario():
        server = await ServerProcess(websocket.PATTERN, rate=1.0).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(connections.opening_request("/feed", websocket=True))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            return head
        finally:
            await server.stop()

    assert lab.run(scenario()).startswith(b"HTTP/1.1 101")


def test_too_low_a_hard_limit_on_open_files_says_what_to_do(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1024, 4096))
    with pytest.raises(LabError, match=r"at most 4096 files.*Choose at most 3896 connections.*ulimit"):
        connections.allow_open_files(10_200)


def test_bad_settings_get_a_clear_answer():
    with pytest.raises(ValueError, match="pattern must be one of"):
        hold_idle_connections("polling", 10)
    with pytest.raises(ValueError, match="count must be between"):
        hold_idle_connections("sse", 0)
