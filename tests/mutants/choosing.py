"""Chapter 7 (choosing a pattern): bugs in the patterns' servers and clients as chapter 7 runs them, in its
sweep, in its memory measurements and in the feed they all share.

Each bug is one edit of the code under test; the edit names the exact line it changes, so a mutant
whose line has moved fails loudly instead of testing nothing.
"""

from mutants import Mutant, edit, swap
from mutants.ajax_polling import _tracing_header

NOTEBOOK = "07_choosing_a_pattern"
SSE = "labsupport.patterns.sse:EventStreamHandler"
CHOOSING = "labsupport.experiments.choosing"


def _everywhere(make):
    """``make``'s function put in place of the original's code, so that every module that imported it by
    name (``from .sse_codec import encode_event``) runs the bug too."""
    def make_in_place(original):
        original.__code__ = make(original).__code__
        return original
    return make_in_place


def _total_over_count(bytes_per_connection):
    # the bug: memory per connection as the server's memory over its connections, its baseline shared out
    return property(lambda self: float(self.rows["rss_bytes"].iloc[-1]) / self.count)


MUTANTS = [
    Mutant("poller-ticks-two-intervals-ahead", "the poller sets its next tick two intervals ahead", NOTEBOOK,
           ("C1 polling requests", "C1 polling staleness", "C2 polling requests", "C2 polling skips",
            "C3 exercise header traffic"),
           swap("labsupport.patterns.polling:next_poll", edit(("due = tick + interval", "due = tick + 2 * interval"))),
           group=1),
    Mutant("answer-adds-request-id", "every poll's answer carries one more header (a request id)", NOTEBOOK,
           ("C2 poll bytes",), swap("labsupport.patterns.polling:LatestHandler.get", _tracing_header), group=1),
    Mutant("stream-ends-after-news", "the stream handler finishes its response after the news it waited for, "
           "as a long-poll handler does", NOTEBOOK, ("C1 push requests",),
           swap(f"{SSE}.get", edit(("cursor = event.seq", "cursor = event.seq\nreturn"))), group=1),
    Mutant("listener-gives-up-after-100ms", "the stream's client takes 0.1 s without an event for a dead stream, "
           "closes it and reconnects", NOTEBOOK, ("C2 push held",),
           swap("labsupport.patterns.sse:listen", edit(("idle_timeout: float | None = None",
                                                        "idle_timeout: float | None = 0.1"))), group=2),
    Mutant("memory-slope-in-megabytes", "memory per connection is fitted on the megabytes column", NOTEBOOK,
           ("C3 memory per connection",),
           swap(f"{CHOOSING}:measure_connection_memory",
                lambda call: edit(('rows["rss_bytes"], 1)', 'rows["rss_mb"], 1)'))(call.coro)), group=1),
    Mutant("memory-per-connection-from-total", "memory per connection is the server's memory over its connections",
           NOTEBOOK, ("C3 memory at scale",),
           swap("labsupport.experiments.connections:Holding.bytes_per_connection", _total_over_count), group=1),
    Mutant("sweep-keep-alive-misspelt", "the sweep asks for 'polling, keep alive', so its kept-alive poller is not",
           NOTEBOOK, ("C2 keep-alive held",),
           swap(f"{CHOOSING}:_sweep_run", edit(('pattern == "polling, keep-alive"', 'pattern == "polling, keep alive"'))),
           group=1),
    Mutant("encoder-names-every-event", "the SSE encoder writes 'event: message' on every event", NOTEBOOK,
           ("C2 bytes per event", "C2 crossover", "C2 exercise bytes grow"),
           swap("labsupport.patterns.sse_codec:encode_event",
                _everywhere(edit(('(("event", event), ("id", id))', '(("event", event or "message"), ("id", id))')))),
           group=2),
    Mutant("stream-checks-feed-every-50ms", "the stream handler looks for news every 50 ms instead of being woken",
           NOTEBOOK, ("C1 push staleness",),
           swap(f"{SSE}.get", edit(("news = await self.feed.wait_after(cursor, timeout=self.heartbeat)",
                                    "deadline = time.monotonic() + (self.heartbeat or float('inf'))\n"
                                    "while not (news := self.feed.after(cursor)) and time.monotonic() < deadline:\n"
                                    "    await asyncio.sleep(0.05)"))), group=2),
    Mutant("new-listener-skips-next", "a new listener starts after the next event, not with it", NOTEBOOK,
           ("C1 push missed",),
           swap(f"{SSE}._resume_point", edit(("return self.feed.last_seq  #", "return self.feed.last_seq + 1  #"))),
           group=2),
    Mutant("sweep-poller-keeps-alive", "the sweep does not pass keep_alive to the poller, so every poller keeps "
           "its connection", NOTEBOOK, ("C2 polling held without keep-alive",),
           swap(f"{CHOOSING}:_sweep_run", edit(("polling.poll, interval=interval, keep_alive=keep_alive)",
                                                "polling.poll, interval=interval)"))), group=2),
    Mutant("cursor-answer-newest-only", "the server answers a cursor with the newest event past it, not every one",
           NOTEBOOK, ("C2 cursor polling misses nothing", "C2 cursor polling bytes"),
           swap("labsupport.patterns.longpolling:EventsHandler.get",
                edit(("[event.to_json() for event in news]", "[event.to_json() for event in news[-1:]]"))), group=2),
    Mutant("long-poll-never-holds", "the long-poll handler answers with whatever it has: polling again", NOTEBOOK,
           ("C1 long polling requests",),
           swap("labsupport.patterns.longpolling:EventsHandler.get",
                edit(("news = await self.feed.wait_after(after, timeout=self.hold)", "news = self.feed.after(after)"))),
           group=3),
    Mutant("heartbeat-default-in-ms", "the stream's default heartbeat is divided by 1000, as if in milliseconds "
           "like retry", NOTEBOOK, ("C1 stream CPU",),
           swap(f"{SSE}.initialize", edit(("heartbeat: float = HEARTBEAT", "heartbeat: float = HEARTBEAT / 1000"))),
           group=3),
    Mutant("feed-first-event-at-start", "the feed publishes its first event at the start, not one spacing in",
           NOTEBOOK, ("C1 same feed",),
           swap("labsupport.feed:Feed._run", edit(("offset = ticks / ticks_per_second",
                                                    "offset = (ticks - 1) / ticks_per_second"))), group=3),
]
