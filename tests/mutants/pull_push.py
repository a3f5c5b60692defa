"""Chapter 1 (pull and push): bugs in the poller, the poll handler, the push handler and the meter's link."""

import asyncio
import itertools

from mutants import Mutant, edit, swap

NOTEBOOK = "01_pull_and_push"


def _waiting_twice(poll):
    async def poll_at_twice_the_interval(base_url, recorder, *, interval, **settings):
        # the bug: the client sleeps its interval after each answer, and the schedule adds another
        return await poll(base_url, recorder, interval=2 * interval, **settings)
    return poll_at_twice_the_interval


def _skipping_every_third(next_poll):
    polls = itertools.count(1)

    def next_poll_skipping(tick, interval, now):
        due, tick = next_poll(tick, interval, now)
        if next(polls) % 3 == 0:  # the bug: a back-off meant for failed polls runs after every third answer
            return due + interval, tick + interval
        return due, tick
    return next_poll_skipping


def _answer_built_once(get):
    built = {}

    def get_cached(self):
        # the bug: the answer is built once per server and kept, to spare the work of every poll
        if id(self.feed) not in built:
            latest = self.feed.latest
            built[id(self.feed)] = {"seq": 0, "value": None} if latest is None else latest.to_json()
        if self.cache_control is not None:
            self.set_header("Cache-Control", self.cache_control)
        self.write(built[id(self.feed)])
    return get_cached


def _waiting_before_flush(flush):
    async def flush_late(self, *args, **kwargs):
        await asyncio.sleep(0.02)  # the bug: "gather 20 ms of updates per write to save system calls"
        return await flush(self, *args, **kwargs)
    return flush_late


def _padding_updates(write):
    def write_padded(self, chunk):
        # the bug: every update padded to 1 kB "so that buffering proxies pass it on"
        return write(self, chunk.rstrip("\n").ljust(1023) + "\n" if isinstance(chunk, str) else chunk)
    return write_padded


def _buffer_per_stream(initialize):
    def initialize_with_buffer(self, feed):
        initialize(self, feed)
        self.outgoing = bytearray(64 * 1024)  # the bug: each stream preallocates a 64 kB write buffer
    return initialize_with_buffer


def _link_delay_twice(delay):
    def delay_twice(self, nbytes):
        return delay(self, nbytes) + self.latency  # the bug: the latency is added on reading and again on writing
    return delay_twice


PUSH = "labsupport.patterns.push:StreamHandler"

MUTANTS = [
    Mutant("poller-twice-the-interval", "the poller waits its interval twice per poll", NOTEBOOK,
           ("P1 requests", "P2 staleness", "P1 requests a minute"),
           swap("labsupport.patterns.polling:poll", _waiting_twice), group=1),
    Mutant("push-waits-before-flush", "the push handler waits 20 ms before each flush", NOTEBOOK,
           ("P3 loopback latency", "P3 link latency"), swap(f"{PUSH}.flush", _waiting_before_flush), group=1),
    Mutant("push-pads-updates", "the push handler pads every update to 1 kB", NOTEBOOK,
           ("P3 bytes per update",), swap(f"{PUSH}.write", _padding_updates), group=1),
    Mutant("poller-skips-every-third", "the poller skips every third poll", NOTEBOOK,
           ("P1 requests",), swap("labsupport.patterns.polling:next_poll", _skipping_every_third), group=2),
    Mutant("push-cursor-past-the-event", "the push handler's cursor is one past the event it wrote", NOTEBOOK,
           ("P3 none missed",), swap(f"{PUSH}.get", edit(("cursor = event.seq", "cursor = event.seq + 1"))), group=2),
    Mutant("push-buffer-per-stream", "every held stream preallocates a 64 kB buffer", NOTEBOOK,
           ("P4 memory per connection",), swap(f"{PUSH}.initialize", _buffer_per_stream), group=2),
    Mutant("poll-answer-built-once", "the poll handler builds its answer once and keeps it", NOTEBOOK,
           ("P1 empty share", "P2 missed"), swap("labsupport.patterns.polling:LatestHandler.get", _answer_built_once),
           group=3),
    Mutant("meter-latency-twice", "the meter adds the link's latency twice", NOTEBOOK,
           ("P3 link latency",), swap("labsupport.wire:Link.delay", _link_delay_twice), group=3),
]
