"""Chapter 2 (Ajax polling): bugs in the poller's schedule, its connections, and the poll server's answers."""

import json
import time
import types
import uuid

from mutants import Mutant, swap

NOTEBOOK = "02_ajax_polling"


def _twice_the_interval(next_poll):
    def next_poll_slow(tick, interval, now):
        return next_poll(tick, 2 * interval, now)  # the bug: the interval converted to seconds twice
    return next_poll_slow


def _no_random_phase(random_module):
    # the bug: `tick = time.monotonic()`, so every client starts polling at the same moment
    return types.SimpleNamespace(uniform=lambda low, high: low)


def _connector(change):
    """The poller's aiohttp, its TCPConnector built with the options ``change`` makes of those asked for."""
    def make(aiohttp_module):
        def connector(**options):
            return aiohttp_module.TCPConnector(**change(options))
        return types.SimpleNamespace(**{**vars(aiohttp_module), "TCPConnector": connector})
    return make


def _without(*names):
    return lambda options: {k: v for k, v in options.items() if k not in names}


# the bug: force_close left on from a test (aiohttp refuses a keep-alive timeout beside it)
_keep_alive_off = _connector(lambda options: {**_without("keepalive_timeout")(options), "force_close": True})
_close_ignored = _connector(_without("force_close"))  # the bug: keep_alive=False never reaches the connector
_idle_timeout_ignored = _connector(_without("keepalive_timeout"))  # the bug: aiohttp's own 15 s holds


def _tracing_header(get):
    def get_traced(self):
        get(self)
        self.set_header("X-Request-Id", uuid.uuid4().hex)  # the bug's intent: trace every answer
    return get_traced


def _pretty_printed(get):
    def get_pretty(self):
        latest = self.feed.latest
        if self.cache_control is not None:
            self.set_header("Cache-Control", self.cache_control)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        # the bug: indented JSON, left in from debugging
        self.write(json.dumps({"seq": 0, "value": None} if latest is None else latest.to_json(), indent=2))
    return get_pretty


def _no_etag(compute_etag):
    return lambda self: None  # the bug: "hashing every answer is wasted work", so no ETag, never a 304


def _cached_for_a_second(get):
    cached: dict[int, tuple[float, object]] = {}

    def get_cached(self):  # the bug: the newest event is looked up at most once a second, to save work
        now = time.monotonic()
        at, latest = cached.get(id(self.feed), (float("-inf"), None))
        if now - at >= 1.0:
            at, latest = cached[id(self.feed)] = (now, self.feed.latest)
        feed, self.feed = self.feed, types.SimpleNamespace(latest=latest)
        try:
            get(self)
        finally:
            self.feed = feed
    return get_cached


def _every_method_served() -> None:
    """The bug: a handler without the GET-only guard, and a catch-all that answers DELETE like GET."""
    from labsupport.patterns._input import SizeLimits
    from labsupport.patterns.polling import LatestHandler

    LatestHandler.prepare = SizeLimits.prepare
    LatestHandler.delete = LatestHandler.get


POLLER, HANDLER = "labsupport.patterns.polling", "labsupport.patterns.polling:LatestHandler"

MUTANTS = [
    Mutant("poller-twice-its-interval", "the poller waits two intervals between polls", NOTEBOOK,
           ("A1 mean latency", "A1 worst latency", "A4 slow feed latency", "A4 fast feed missed", "A4 fast feed staleness",
            "A1 exercise waits", "A1 exercise capacity"),
           swap(f"{POLLER}:next_poll", _twice_the_interval), group=1),
    Mutant("response-adds-header", "every answer carries one more header (a request id)", NOTEBOOK,
           ("A2 header bytes", "A2 exercise bytes per poll"), swap(f"{HANDLER}.get", _tracing_header), group=1),
    Mutant("keep-alive-off", "the poller's connector closes every connection after its answer", NOTEBOOK,
           ("A3 keep-alive connections", "A3 exercise connections"), swap(f"{POLLER}:aiohttp", _keep_alive_off),
           group=1),
    Mutant("every-method-served", "the poll handler answers DELETE as it answers GET", NOTEBOOK,
           ("A2 wrong request",), _every_method_served, group=1),
    Mutant("pollers-in-lockstep", "every client starts polling at the same moment", NOTEBOOK,
           ("A1 phases",), swap(f"{POLLER}:random", _no_random_phase), group=2),
    Mutant("connection-close-ignored", "keep_alive=False does not make the poller close its connections",
           NOTEBOOK, ("A3 close connections",), swap(f"{POLLER}:aiohttp", _close_ignored), group=2),
    Mutant("answer-pretty-printed", "the answer's JSON is indented", NOTEBOOK,
           ("A2 overhead ratio",), swap(f"{HANDLER}.get", _pretty_printed), group=2),
    Mutant("server-omits-etag", "the server sends no ETag, so it never answers 304", NOTEBOOK,
           ("A5 not modified share", "A5 bytes saved"), swap(f"{HANDLER}.compute_etag", _no_etag), group=2),
    Mutant("idle-timeout-ignored", "the poller keeps idle connections 15 s whatever idle_timeout says", NOTEBOOK,
           ("A3 idle timeout connections", "A3 exercise connections"),
           swap(f"{POLLER}:aiohttp", _idle_timeout_ignored), group=3),
    Mutant("answer-cached-a-second", "the server looks up the newest event at most once a second", NOTEBOOK,
           ("A4 slow feed seen", "A4 fast feed latency"), swap(f"{HANDLER}.get", _cached_for_a_second), group=3),
]
