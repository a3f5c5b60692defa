"""The pattern registry: every pattern the lab runs by name is one record, and adding one touches
its own module and the registry's line only."""

import importlib
import sys

import pytest

from labsupport import lab
from labsupport.experiments.choosing_stage import backend_for, client_for
from labsupport.experiments.core import Workload, measure
from labsupport.feed import Feed
from labsupport.patterns import registry
from labsupport.patterns.registry import PATTERNS, named

# A pattern nobody wrote the lab for: the newest event's number as plain text, asked for every 20 ms.
NEW_PATTERN = '''
import asyncio

import aiohttp
import tornado.web

from labsupport.patterns.pattern import Pattern


class Newest(tornado.web.RequestHandler):
    def initialize(self, feed):
        self.feed = feed

    def get(self):
        self.write(str(0 if self.feed.latest is None else self.feed.latest.seq))


def handlers(feed):
    return [(r"/newest", Newest, {"feed": feed})]


async def listen(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        recorder.ready.set()
        while True:
            async with session.get(f"{base_url}/newest") as response:
                seq = int(await response.text())
            if seq:
                recorder.saw(seq)
            await asyncio.sleep(0.02)


PATTERN = Pattern("newest number", __name__, "/newest")
'''


def test_every_record_names_its_own_module_and_serves_its_path():
    for name, pattern in PATTERNS.items():
        assert pattern.name == name and sys.modules[pattern.module].PATTERN is pattern
        assert any(route[0] == pattern.path for route in pattern.routes(Feed(1.0)))


def test_an_unknown_name_is_refused_with_the_names_there_are():
    with pytest.raises(ValueError, match="pattern must be one of .'polling', 'long polling', 'push', 'sse', "
                                         "'websocket'.*not 'carrier pigeon'"):
        named("carrier pigeon")


def test_a_new_pattern_is_its_module_and_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "newest_number.py").write_text(NEW_PATTERN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))   # where a server process finds the module too
    new = importlib.import_module("newest_number")

    monkeypatch.setitem(registry.PATTERNS, "newest number", new.PATTERN)   # the registry's line

    # Nothing else changes: chapter 7's stage serves it in a process of its own and points its client at it.
    workload = Workload(rate=20.0, clients=2, duration=0.6)
    result = lab.run(measure("newest number", None, client_for("newest number"), workload,
                             backend=backend_for("newest number", workload, hold=1.0), drain=0.2, ready_first=True))
    last = int(result.events["seq"].max())
    assert last >= 10 and set(result.deliveries.groupby("client")["seq"].max()) == {last}
