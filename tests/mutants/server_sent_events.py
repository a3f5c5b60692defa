"""Chapter 4 (Server-Sent Events): bugs in the encoder, the parser, the stream handler and the client.

Most bugs here are one-line edits of the real code: ``edit`` recompiles a function's source with one
line changed, in its own module, so the mutant is the code a developer would have written.
"""

import json

from mutants import Mutant, edit, swap

NOTEBOOK = "04_server_sent_events"


def _adding_a_newline(encode_event):
    def encode_with_extra_newline(data, **fields):
        return encode_event(data, **fields) + b"\n"  # the bug: "one more blank line, to be safe"
    return encode_with_extra_newline


def _parsing_json_loosely(strict):
    def published_value(body: bytes) -> float:
        message = json.loads(body)  # the bug: json.loads accepts NaN and Infinity, which are not JSON
        if not isinstance(message, dict) or type(message.get("value")) not in (int, float):
            raise ValueError("the JSON must be an object with a numeric \"value\"")
        return float(message["value"])
    return published_value


HANDLER = "labsupport.patterns.sse:EventStreamHandler"
PARSER = "labsupport.patterns.sse_codec:EventStreamParser"

MUTANTS = [
    # group 1: the encoder, the parser's decoding, the handler's write loop and resume point, the POST
    # check, the client's loop
    Mutant("sse-encoder-adds-a-newline", "the encoder ends every event with one newline more", NOTEBOOK,
           ("S2 bytes by hand", "S2 q1 framing"),
           swap("labsupport.patterns.sse:encode_event", _adding_a_newline), group=1),
    Mutant("sse-parser-decodes-each-chunk", "the parser decodes each read on its own, so a split character "
           "becomes two replacement characters", NOTEBOOK, ("S1 parser split",),
           swap(f"{PARSER}.feed", edit(("text = self._decoder.decode(chunk)",
                                       "text = chunk.decode('utf-8', 'replace')"))), group=1),
    Mutant("sse-server-coalesces-50ms", "the server waits 50 ms after news to write several events at once",
           NOTEBOOK, ("S3 latency", "S3 keeps up"),
           swap(f"{HANDLER}.get", edit(("for event in news:",
                                       "await asyncio.sleep(0.05)\nfor event in news:"))), group=1),
    Mutant("sse-unknown-id-gets-400", "a Last-Event-ID that is not one of the stream's ids gets 400",
           NOTEBOOK, ("S4 never 4xx", "S4 reset"),
           swap(f"{HANDLER}._resume_point", edit((
               "# Not an id of this stream", "raise tornado.web.HTTPError(400, 'unknown Last-Event-ID')  #"))),
           group=1),
    Mutant("sse-post-accepts-nan", "the talk-back POST parses its body with json.loads", NOTEBOOK,
           ("S5 refusals", "S5 only good published"),
           swap("labsupport.patterns.sse:_published_value", _parsing_json_loosely), group=1),
    Mutant("sse-client-stops-at-end", "the client returns when its stream ends instead of reconnecting",
           NOTEBOOK, ("S4 reconnect",),
           swap("labsupport.patterns.sse:listen", edit(("await asyncio.sleep(delay)", "return"))), group=1),

    # group 2: the handler's flushing and resume point, the parser's fields, the client's idle timeout
    Mutant("sse-server-flushes-every-10", "the server flushes every tenth event, to save writes", NOTEBOOK,
           ("S3 none missed", "S3 fan-out none missed", "S5 came back"),
           swap(f"{HANDLER}.get", edit(("await self.flush()  # one event",
                                       "if event.seq % 10 == 0: await self.flush()  # one event"))), group=2),
    Mutant("sse-server-ignores-last-event-id", "the server starts every stream at the newest event",
           NOTEBOOK, ("S4 none lost", "S4 gap announced", "S4 reset"),
           swap(f"{HANDLER}._resume_point", edit(("if not last_id:", "if True:"))), group=2),
    Mutant("sse-parser-needs-a-colon", "the parser skips a line with no colon", NOTEBOOK,
           ("S2 smallest event",),
           swap(f"{PARSER}._line", edit(('name, colon, value = line.partition(":")',
                                        'name, colon, value = line.partition(":")\n'
                                        'if not colon:\n    return None'))), group=2),
    Mutant("sse-client-idle-timeout-50ms", "the client takes 50 ms of silence for a dead stream", NOTEBOOK,
           ("S1 one request",),
           swap("labsupport.patterns.sse:listen", edit(("idle_timeout: float | None = None",
                                                        "idle_timeout: float | None = 0.05"))),
           group=4),   # alone: its clients reconnect all through the fan-out run, which may then end before its claims
    Mutant("sse-client-one-chunk-per-request", "the client reads one chunk of the stream per request, as a poll reads "
           "its answer, then asks again", NOTEBOOK, ("S3 one connection each",),
           swap("labsupport.patterns.sse:listen", edit(("delay = delay if parser.retry is None else parser.retry / 1000",
                                                        "delay = delay if parser.retry is None else parser.retry / 1000\n"
                                                        "break  # one chunk per request"))),
           group=5),   # alone too: its clients ask again all through the fan-out run

    # group 3: the handler's headers and resume point, the parser's retry
    Mutant("sse-no-cache-header-missing", "the stream is sent without Cache-Control: no-cache", NOTEBOOK,
           ("S1 event stream",),
           swap(f"{HANDLER}.get", edit(('self.set_header("Cache-Control", "no-cache")', "pass"))), group=3),
    Mutant("sse-resume-repeats-last", "the server resumes from the client's last event, not after it",
           NOTEBOOK, ("S4 none lost",),
           swap(f"{HANDLER}._resume_point", edit(("return resume[1]\n", "return resume[1] - 1\n"))), group=3),
    Mutant("sse-id-life-ignored", "the server reads only the number of a Last-Event-ID, not which life of the stream "
           "it came from", NOTEBOOK, ("S4 reset",),
           swap(f"{HANDLER}._resume_point", edit(("resume[0] == self.feed.stream and ", ""))), group=3),
    Mutant("sse-parser-ignores-retry", "the parser drops the retry field, so the client keeps its own "
           "1-second delay", NOTEBOOK, ("S4 retry honoured", "S4 loss expected"),
           swap(f"{PARSER}._line", edit(('elif name == "retry":', 'elif name == "retry:":'))), group=3),
]
