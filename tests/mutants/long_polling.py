"""Chapter 3 (long polling): bugs in the long-polling handler, its client and its cursor.

Each bug is one edit of the pattern's source (``patterns/longpolling.py``), as a developer would
make it: the edit names the exact line it changes, so a mutant whose line has moved fails loudly
instead of testing nothing.
"""

from mutants import Mutant, edit, swap

NOTEBOOK = "03_long_polling"
HANDLER = "labsupport.patterns.longpolling:EventsHandler.get"
CLIENT = "labsupport.patterns.longpolling:long_poll"


WAIT = "news = await self.feed.wait_after(after, timeout=self.hold)"
ANSWERED = 'recorder.request(sent, status, len(answer["events"]), answered)'

MUTANTS = [
    Mutant("cursor-parsed-with-int", "the cursor is read with int(), which takes '-3' and raises on 'abc'",
           NOTEBOOK, ("L1 bad cursor",), swap(HANDLER, edit(("else cursor(raw)", "else int(raw)"))), group=1),
    Mutant("long-poll-answers-at-once", "the handler answers with whatever it has, nothing included: polling again",
           NOTEBOOK, ("L1 empty answers", "L2 held requests", "L4 hold", "L5 one request per event", "L5 crossover",
                      "L5 crossover at 0.5 s"),
           swap(HANDLER, edit((WAIT, "news = self.feed.after(after)"))), group=1),
    Mutant("answers-only-latest", "the handler answers with the newest event only, not every event after the cursor",
           NOTEBOOK, ("L1 events per answer",),
           swap(HANDLER, edit(("[event.to_json() for event in news]", "[event.to_json() for event in news[-1:]]"))),
           group=1),
    Mutant("server-skips-one", "the server waits for events after cursor + 1: an off-by-one that skips one",
           NOTEBOOK, ("L2 no event missed", "L3 none lost with a cursor", "L4 nothing lost", "L4 cut loses nothing",
                      "L3 restart loses nothing"),
           swap(HANDLER, edit(("wait_after(after, timeout", "wait_after(after + 1, timeout"))), group=2),
    Mutant("client-new-connection-each-time", "the client asks with Connection: close, so each request opens a connection",
           NOTEBOOK, ("L2 one connection per client",),
           swap(CLIENT, edit(('session.get(f"{base_url}/events", params=params)',
                              'session.get(f"{base_url}/events", params=params, headers={"Connection": "close"})'))),
           group=3),
    Mutant("client-without-read-timeout", "the client sets no read timeout, so a request cut on the path is never noticed",
           NOTEBOOK, ("L4 cut costs an error",),
           swap(CLIENT, edit(("ClientTimeout(total=None, sock_read=give_up_after)", "ClientTimeout(total=None)"))),
           group=2),
    Mutant("batch-window-doubled", "the handler sleeps twice the batch window before it answers",
           NOTEBOOK, ("L5 batched requests", "L5 batch latency", "L5 wide window"),
           swap(HANDLER, edit(("asyncio.sleep(self.batch)", "asyncio.sleep(2 * self.batch)"))), group=3),
    Mutant("no-cursor-means-everything", "a request without a cursor gets every event from the start",
           NOTEBOOK, ("L3 loss without a cursor", "L3 restart without a cursor loses"),
           swap(HANDLER, edit(("self.feed.last_seq if raw is None", "0 if raw is None"))), group=3),
    Mutant("hold-waits-twice", "when the hold runs out with no news, the handler waits one hold more before answering",
           NOTEBOOK, ("L4 hold", "L4 hold behind a proxy"),
           swap(HANDLER, edit((WAIT, WAIT + " or await self.feed.wait_after(after, timeout=self.hold)"))), group=3),
    Mutant("client-waits-before-reasking", "the client sleeps 0.1 s after each answer before it asks again",
           NOTEBOOK, ("L3 loss without a cursor", "L5 one request per event", "L1 gap costs", "L1 events per answer"),
           swap(CLIENT, edit((ANSWERED, ANSWERED + "\nawait asyncio.sleep(0.1)"))), group=4),
    Mutant("cursor-ahead-is-refused", "a cursor past the newest event is refused with 400, as a bad cursor is",
           NOTEBOOK, ("L3 crash, new server behind",),
           swap(HANDLER, edit(("if after is None:", "if after is None or after > self.feed.last_seq:"))),
           group=3),
    Mutant("restart-judged-by-number", "the handler ignores the stream the cursor came from and judges it by its number",
           NOTEBOOK, ("L3 crash, new server ahead",),
           swap("labsupport.patterns.longpolling:EventsHandler.another_life",
                lambda another_life: lambda self, after, stream: another_life(self, after, None)), group=4),
    Mutant("handler-checks-feed-every-50ms", "the handler looks for news every 50 ms instead of being woken by it",
           NOTEBOOK, ("L1 latency",),
           swap(HANDLER, edit((WAIT, "deadline = time.monotonic() + self.hold\n"
                                     "while not (news := self.feed.after(after)) and time.monotonic() < deadline:\n"
                                     "    await asyncio.sleep(0.05)"))), group=4),
]
