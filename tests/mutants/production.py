"""Chapter 8 (in production): bugs in the HTTP/2 and HTTP/3 servers and clients, the idle-cutting
proxy, the SSE and reconnecting clients, the deploy, the authenticating server, the webhook provider
and receiver, and the session store and sticky balancer.

Most bugs are one edit of a pattern's source (``patterns/*.py``) or of the experiment that wires
the parts (``experiments/production_*.py``): the edit names the exact line it changes, so a mutant
whose line has moved fails loudly instead of testing nothing.
"""

import uuid

from mutants import Mutant, edit, swap

NOTEBOOK = "08_in_production"
HTTP2 = "labsupport.patterns.http2"
HTTP3 = "labsupport.patterns.http3"
SSE_LISTEN = "labsupport.patterns.sse:listen"
DELIVER = "labsupport.patterns.webhook:deliver"
SSE_TIMEOUT = "aiohttp.ClientTimeout(total=None, sock_read=idle_timeout, sock_connect=connect_timeout)"


def _request_id_on_every_request(client):
    def client_with_request_ids(*, http2, streams=200):
        http = client(http2=http2, streams=streams)

        async def stamp(request):   # the bug: a tracing hook gives every request a fresh id, which HPACK cannot index
            request.headers["x-request-id"] = str(uuid.uuid4())

        http.event_hooks["request"].append(stamp)
        return http
    return client_with_request_ids


def _lane_copies_its_link(init):
    import copy

    def init_with_a_copy(self, relay, direction, link):
        init(self, relay, direction, link)
        self.link = copy.copy(link)   # the bug: each connection keeps the link settings it opened with
    return init_with_a_copy


def _sessions_default_argument(handlers):
    shared = {}

    def handlers_sharing(name, feed):   # the bug: `def handlers(name, feed, sessions=Sessions())`, one dict for all
        routes = handlers(name, feed)
        for _, _, options in routes:
            options["sessions"] = shared
        return routes
    return handlers_sharing


MUTANTS = [
    # -- group 1 --------------------------------------------------------------------------------
    Mutant("http2-request-id-header", "a tracing hook stamps every HTTP/2 request with a fresh x-request-id",
           NOTEBOOK, ("R1 header index",), swap(f"{HTTP2}:client", _request_id_on_every_request),
           group=1),
    Mutant("http2-stream-skips-first-event", "the event stream starts after the event after the current one",
           NOTEBOOK, ("R1 streams missed",),
           swap(f"{HTTP2}:app", edit(("cursor = feed.last_seq", "cursor = feed.last_seq + 1"))), group=1),
    Mutant("quic-address-validation", "the HTTP/3 server validates every client's address with a Retry first",
           NOTEBOOK, ("R2 handshake", "R2 first answer"),
           swap(f"{HTTP3}:Http3Server.start", edit(("create_protocol=protocol)", "create_protocol=protocol, retry=True)"))),
           group=1),
    Mutant("idle-timeout-doubled", "the proxy counts a connection idle only after twice its timeout",
           NOTEBOOK, ("R3 drops", "R3 first drop"),
           swap("labsupport.patterns.idle:IdleCutter._watch",
                edit(("now - conn.last_active >= self.timeout", "now - conn.last_active >= 2 * self.timeout"))), group=1),
    Mutant("sse-default-read-timeout", "the SSE client sets a read timeout of 1 s when none is asked for",
           NOTEBOOK, ("R3 half-open unnoticed",),
           swap(SSE_LISTEN, edit(("sock_read=idle_timeout,", "sock_read=idle_timeout or 1.0,"))), group=1),
    Mutant("jitter-halved", "full jitter draws below half the backoff ceiling",
           NOTEBOOK, ("R4 jitter spread", "R4 exercise spread"),
           swap("labsupport.patterns.reconnect:backoff_with_jitter",
                edit(("rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))",
                      "rng.uniform(0, min(cap, base * 2 ** (attempt - 1)) / 2)"))), group=1),
    Mutant("websocket-ignores-cursor", "the WebSocket server starts every socket from now, whatever ?after= says",
           NOTEBOOK, ("R5 rolling loses nothing", "R5 others retry"),
           swap("labsupport.patterns.websocket:FeedSocket._push",
                edit(("while True:", "cursor = self.hub.feed.last_seq\nwhile True:"))),
           group=1),
    Mutant("token-parameter-misnamed", "the stream reads the token from ?access_token= while clients send ?token=",
           NOTEBOOK, ("R6 token in the log",),
           swap("labsupport.patterns.auth:EventsHandler.get",
                edit(('self.get_query_argument("token", "")', 'self.get_query_argument("access_token", "")'))), group=1),
    Mutant("ticket-reusable", "a ticket is looked up, not spent: the same ticket works again",
           NOTEBOOK, ("R6 single-use ticket",),
           swap("labsupport.patterns.auth:Tickets.spend", edit(("self._open.pop(ticket,", "self._open.get(ticket,"))),
           group=1),
    Mutant("origin-presence-only", "the WebSocket server checks that an Origin is sent, not which",
           NOTEBOOK, ("R6 origin check",),
           swap("labsupport.patterns.auth:AccountSocket.check_origin",
                edit(("return self.trust_any or origin in self.allowed", "return self.trust_any or bool(origin)"))), group=1),
    Mutant("session-cookie-misnamed", "the WebSocket server reads the session from a cookie named 'session'",
           NOTEBOOK, ("R6 hijacking",),
           swap("labsupport.patterns.auth:AccountSocket.signed_in_user",
                edit(('self.get_cookie("sid", "")', 'self.get_cookie("session", "")'))),
           group=1),
    # the next two edit one method, different lines of it, for different runs' claims
    Mutant("webhook-keyed-by-id-and-timestamp", "the receiver keys deliveries by webhook-id and timestamp, the pair "
           "it verified, though every retry is signed with a new timestamp", NOTEBOOK, ("R7 key applies once",),
           swap("labsupport.patterns.webhook:HookHandler.post",
                edit(('msg_id = self.request.headers["webhook-id"]',
                      'msg_id = self.request.headers["webhook-id"] + self.request.headers["webhook-timestamp"]'))),
           group=1),
    Mutant("webhook-ack-after-work", "the fast receiver does the job before it answers 202",
           NOTEBOOK, ("R7 fast receiver",),
           swap("labsupport.patterns.webhook:HookHandler.post",
                edit(("self.ledger.accept(msg_id, self.request.body)",
                      "await apply(self.ledger, msg_id, self.work, self.dedupe)"))),
           group=1),
    Mutant("webhook-ledger-in-memory", "the receiver keeps its ledger in memory, as a queue in the process would",
           NOTEBOOK, ("R7 crash after the answer", "R7 nothing lost in a crash"),
           swap("labsupport.patterns.webhook:serve", edit(("ledger = Ledger(ledger_path)", 'ledger = Ledger(":memory:")'))),
           group=4),   # alone: the fast receiver that works first (group 1) would also change the crash run
    Mutant("sessions-shared-default", "every server's session store is one default argument, shared by all",
           NOTEBOOK, ("R8 round robin refused",), swap("labsupport.patterns.sessions:handlers", _sessions_default_argument),
           group=1),
    # -- group 2 --------------------------------------------------------------------------------
    Mutant("http2-client-per-stream", "each event stream gets an HTTP/2 client of its own",
           NOTEBOOK, ("R1 connections", "R1 setup bytes", "R1 stream limit"),
           swap("labsupport.experiments.production_http2:run_streams",
                edit(("http2.listen(http, meter.url, r)", "http2.listen(http2.client(http2=use_http2), meter.url, r)"))),
           group=2),
    Mutant("link-copied-per-connection", "each relayed connection keeps a copy of the link settings it opened with",
           NOTEBOOK, ("R1 head-of-line",), swap("labsupport.wire:_Lane.__init__", _lane_copies_its_link), group=2),
    Mutant("http3-stream-skips-first-event", "the HTTP/3 event stream starts after the event after the current one",
           NOTEBOOK, ("R2 events",),
           swap(f"{HTTP3}:_ServerProtocol._stream", edit(("cursor = self.feed.last_seq", "cursor = self.feed.last_seq + 1"))),
           group=2),
    Mutant("sse-heartbeat-setting-ignored", "the SSE handler keeps its 10 s default heartbeat whatever it is given",
           NOTEBOOK, ("R3 heartbeat keeps",),
           swap("labsupport.patterns.sse:EventStreamHandler.initialize",
                edit(("feed, history, heartbeat, retry", "feed, history, HEARTBEAT, retry"))), group=2),
    Mutant("sse-read-timeout-on-connect", "the SSE client's idle timeout is set as its connect timeout",
           NOTEBOOK, ("R3 read timeout", "R3 resume after half-open"),
           swap(SSE_LISTEN, edit((SSE_TIMEOUT, "aiohttp.ClientTimeout(total=None, sock_connect=idle_timeout)"))), group=2),
    Mutant("fixed-delay-drawn", "the fixed reconnect delay is drawn at random below the delay (copied from jitter)",
           NOTEBOOK, ("R4 fixed bunched", "R4 bunch waits"),
           swap("labsupport.patterns.reconnect:fixed", edit(("lambda attempt, rng: delay", "lambda attempt, rng: rng.uniform(0, delay)"))),
           group=2),
    Mutant("drain-says-going-away", "the rolling deploy closes its WebSockets with 1001 'going away', not 1012",
           NOTEBOOK, ("R5 told 1012",),
           swap("labsupport.experiments.production_deploys:Instance.drain",
                edit(('self.close_sockets(SERVICE_RESTART, "service restart")', 'self.close_sockets(GOING_AWAY, "going away")'))),
           group=2),
    Mutant("sse-retries-any-status", "the SSE client treats only 4xx answers as final and retries a 503",
           NOTEBOOK, ("R5 503 ends EventSource",),
           swap(SSE_LISTEN, edit(('if response.status != 200 or response.content_type != "text/event-stream":',
                                  "if 400 <= response.status < 500:"))), group=2),
    Mutant("webhook-failures-unlogged", "the provider logs an attempt only when an answer came back",
           NOTEBOOK, ("R7 outage",),
           swap(DELIVER, edit(("attempts.append(Attempt(msg_id, sent, type(error).__name__))", "pass"))), group=2),
    Mutant("webhook-backoff-uncapped", "the provider's backoff doubles without its ceiling",
           NOTEBOOK, ("R7 backlog cleared",), swap(DELIVER, edit(("min(cap, base * 2 ** failures)", "base * 2 ** failures"))),
           group=2),
    Mutant("webhook-timeout-ten-times", "the provider waits ten times its timeout for an answer (a unit slip)",
           NOTEBOOK, ("R7 slow receiver resends", "R7 no key applies twice"),
           swap(DELIVER, edit(("timeout: float = TIMEOUT", "timeout: float = 10 * TIMEOUT"))), group=2),
    Mutant("sticky-by-peer", "the sticky balancer hashes the whole peer, port included, which changes with every connection",
           NOTEBOOK, ("R8 sticky",),
           swap("labsupport.experiments.production_sticky:StickyByAddress.backend_for",
                edit(('int(peer[0].rsplit(".", 1)[1])', "hash(peer)"))), group=2),
    # -- group 3 --------------------------------------------------------------------------------
    Mutant("http2-stream-limit-unset", "the server gives Hypercorn the module's default stream limit, not its own",
           NOTEBOOK, ("R1 stream limit",),
           swap(f"{HTTP2}:Http2Server.start", edit(("= self.max_streams", "= MAX_STREAMS"))),
           group=3),
    Mutant("sse-without-last-event-id", "the SSE client reconnects without Last-Event-ID",
           NOTEBOOK, ("R3 resume after half-open", "R5 rolling loses nothing"),
           swap(SSE_LISTEN, edit(('headers["Last-Event-ID"] = last_id', "pass"))), group=3),
    Mutant("storm-client-without-last-event-id", "the reconnecting client resumes without Last-Event-ID",
           NOTEBOOK, ("R4 no loss",),
           swap("labsupport.patterns.reconnect:follow",
                edit(('resume = f"Last-Event-ID: {last_id}\\r\\n" if last_id else ""', 'resume = ""'))), group=3),
    Mutant("jitter-same-seed", "every reconnecting client draws its jitter from a generator seeded alike",
           NOTEBOOK, ("R4 jitter spread", "R4 bunch waits", "R4 exercise spread"),
           swap("labsupport.patterns.reconnect:follow",
                edit(("await asyncio.sleep(policy(attempt, rng))", "await asyncio.sleep(policy(attempt, random.Random(0)))"))),
           group=3),
    Mutant("webhook-no-retry-when-down", "the provider retries a 5xx but gives up when the connection fails",
           NOTEBOOK, ("R7 exactly once",),
           swap(DELIVER, edit(("attempts.append(Attempt(msg_id, sent, type(error).__name__))",
                               "attempts.append(Attempt(msg_id, sent, type(error).__name__))\nreturn False"))), group=3),
    Mutant("webhook-timestamp-sign", "the receiver refuses only timestamps from the future, not old ones",
           NOTEBOOK, ("R7 genuine once", "R7 forgeries refused"),
           swap("labsupport.patterns.webhook:verify", edit(("abs(now - int(stamp)) > tolerance", "int(stamp) - now > tolerance"))),
           group=3),
]
