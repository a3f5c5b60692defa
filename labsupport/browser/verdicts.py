"""The browser's claims, judged from a finished run: what the theory predicts against what happened.

A verdict is ``True`` (held), ``False`` (did not hold) or ``None`` (not run: no browser took
part). Verdicts are shown in the widget, not raised: the browser reports after its cell has
finished, so there is no cell left to fail. The JupyterLab test reads them and fails instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..results import Result
from .session import BrowserRun


@dataclass(frozen=True)
class Verdict:
    statement: str
    holds: bool | None
    measured: str = ""


def _latency(result: Result, client: int):
    return result.deliveries.loc[result.deliveries["client"] == client, "latency"].to_numpy()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def judge(run: BrowserRun, result: Result) -> list[Verdict]:
    """Every claim the run can check, route by route."""
    alignment = run.alignment()
    u = alignment.uncertainty if alignment else float("nan")
    python = _latency(result, 0)
    verdicts = []
    if run.pattern == "chat":
        return _chat_claims(run)
    for client, log in enumerate(run.logs.values(), start=1):
        via = "directly" if log.route == "direct" else "through jupyter-server-proxy"
        seen = _latency(result, client)
        if log.failed:  # e.g. on Binder the browser is not on the kernel's machine: no direct route
            verdicts.append(Verdict(f"the browser ({run.spec.api}) connected {via}", None, log.failed))
            continue
        verdicts.append(Verdict(f"the browser ({run.spec.api}) connected {via}", log.ready and len(seen) > 0,
                                f"{len(seen)} events seen"))
        if not len(seen):
            continue
        verdicts.append(Verdict(
            f"{via}, no event reached the browser before the server created it (to within the clock's ±{_ms(u)})",
            bool(seen.min() >= -u), f"earliest {_ms(seen.min())}"))
        verdicts += _pattern_claims(run, result, client, log, seen, python, u, via)
    return verdicts


def _pattern_claims(run, result, client, log, seen, python, u, via) -> list[Verdict]:
    gap = 1 / run.rate
    if run.pattern == "cors":
        return _cors_claims(run, log)
    if run.pattern == "limit":
        return [_limit_claim(run, log, u)]
    if run.pattern == "poll" and run.cache_control != "no-cache":
        return [_cache_claim(run, log, via)]  # a cache that reuses answers makes them late on purpose
    if run.pattern == "poll":
        # An update waits for the next poll, then for that poll's answer. The browser's timer may
        # fire late when the page is busy, so the wait is bounded by the largest gap between two
        # polls it actually sent (about one interval), not by the interval it was asked for.
        sends = sorted(sent for sent, *_ in log.requests)
        gap_max = max((b - a for a, b in zip(sends, sends[1:])), default=run.interval)
        took = max((answered - sent for sent, answered, *_ in log.requests), default=0.0)
        bound = gap_max + took + u
        return [Verdict(f"{via}, no update waited longer than one poll (the largest gap between polls, "
                        f"{_ms(gap_max)} for an interval of {_ms(run.interval)}) and its answer",
                        bool(seen.max() <= bound), f"worst {_ms(seen.max())}, bound {_ms(bound)}"),
                _cache_claim(run, log, via)]
    if run.pattern == "stream":
        if log.route == "direct":
            return [Verdict("directly, each update of the held stream arrived before the next was created",
                            bool(np.percentile(seen, 95) < gap), f"p95 {_ms(np.percentile(seen, 95))}, "
                            f"updates {_ms(gap)} apart")]
        first = result.deliveries.loc[result.deliveries["client"] == client, "seen"].min()
        last_created = result.events["created"].max()
        return [Verdict("through the proxy, nothing of the held stream arrived until it ended (buffered)",
                        bool(first >= last_created - u),
                        f"first update seen {first:.2f} s, last created {last_created:.2f} s")]
    claims = []
    if run.pattern in ("sse", "ws", "longpoll") and len(python):
        # What the browser adds: its own handling of an answer and, on the proxy route, the extra
        # hop. A fetch round trip on the same route contains both, so one round trip bounds it. A
        # long poll may also have to send its next request first (an event between two
        # requests): one more round trip. The clock's alignment adds its ±u either way.
        trips = 2 if run.pattern == "longpoll" else 1
        trip = run.round_trip(log.route)
        bound = trips * trip
        extra = np.median(seen) - np.median(python)
        where = f"the median of {len(log.trips)} timed during the run" if log.trips else "from the clock exchanges before the run"
        claims.append(Verdict(
            f"{via}, the browser's median latency is the Python client's plus at most {trips} round "
            f"trip(s) on its route ({_ms(bound)}), to within the clock's ±{_ms(u)}", bool(-u <= extra <= bound + u),
            f"browser {_ms(np.median(seen))}, Python {_ms(np.median(python))}; "
            f"a round trip {_ms(trip)}, {where}"))
    if run.pattern == "sse" and log.route == "proxy":
        claims.append(Verdict("through the proxy, EventSource's events arrived as they happened, not at the end "
                              "(the proxy streams text/event-stream)", bool(np.median(seen) < gap),
                              f"median {_ms(np.median(seen))}, events {_ms(gap)} apart"))
    if run.pattern == "sse" and run.cut_at is not None:
        missed = len(result.events) - len(seen)
        claims.append(Verdict(f"{via}, EventSource reconnected by itself after the cut and lost nothing",
                              log.notes.get("opens", 0) >= 2 and missed == 0,
                              f"opened {log.notes.get('opens', 0)} times, {missed} events missed"))
        asks = [head for head in run.stream_requests(log.route)]
        resumed = [h for h in asks[1:] if b"\r\nlast-event-id: " in h.lower()]
        claims.append(Verdict(f"{via}, the browser's reconnection said where it stopped (Last-Event-ID)",
                              len(asks) >= 2 and len(resumed) == len(asks) - 1,
                              f"{len(asks)} requests for the stream, {len(resumed)} with Last-Event-ID"))
    if run.pattern == "sse" and "refused_state" in log.notes:
        hits = run.refused.get(log.route, 0)
        claims.append(Verdict(f"{via}, an EventSource answered 503 asked once and never again",
                              hits == 1 and log.notes["refused_state"] == 2,
                              f"{hits} request(s) in {run.duration:.0f} s, readyState {log.notes['refused_state']}"))
    return claims


def _cache_claim(run, log, via) -> Verdict:
    """What the browser's HTTP cache did with the polls, counted where they arrived."""
    made = len(log.requests)
    page_304 = sum(status == 304 for _, _, status, *_ in log.requests)
    answers = run.answers_to(log.route)
    revalidated = sum(status == 304 and "If-None-Match" in request.headers for status, request in answers)
    counted = f"the page made {made} requests, {len(answers)} reached the server, {revalidated} answered 304"
    if run.cache_control == "no-cache":
        return Verdict(f"{via}, with no-cache the browser asked every time and revalidated on its own "
                       "(If-None-Match, 304), while the page saw only 200s",
                       len(answers) >= made and revalidated >= 1 and page_304 == 0, counted)
    return Verdict(f"{via}, with {run.cache_control or 'no freshness headers'} the browser reused answers "
                   "without asking: fewer requests reached the server than the page made",
                   len(answers) < made, counted)


def _cors_claims(run, log) -> list[Verdict]:
    """Three kinds of poll from this page's origin to the server's (another port): who saw what."""
    outcome = log.notes.get("cors", {})

    def arrived(phase: str, method: str = "GET") -> int:
        return sum(request.method == method for _, request in run.answers_to("direct", phase))

    closed, simple, custom = (outcome.get(p, {}) for p in ("closed", "simple", "custom"))
    return [
        Verdict("without Access-Control-Allow-Origin the server answered every poll, but the browser hid "
                "each answer from the page", arrived("closed") == closed.get("made", -1) > 0
                and closed.get("read", -1) == 0,
                f"{arrived('closed')} polls reached the server, the page read {closed.get('read')}"),
        Verdict("with Access-Control-Allow-Origin naming this page, the page read every answer, one request "
                "per poll", simple.get("read", -1) == simple.get("made") == arrived("simple") > 0
                and arrived("simple", "OPTIONS") == 0,
                f"{simple.get('read')} of {simple.get('made')} read, {arrived('simple')} requests"),
        Verdict("a custom header made the browser ask first (a preflight OPTIONS): two requests per poll",
                custom.get("read", -1) == custom.get("made") == arrived("custom") == arrived("custom", "OPTIONS") > 0,
                f"{custom.get('made')} polls, {arrived('custom', 'OPTIONS')} OPTIONS + {arrived('custom')} GET"),
    ]


def _limit_claim(run, log, u) -> Verdict:
    """Six connections per host: when did the seventh stream, and a fetch, get one?"""
    limit = log.notes.get("limit", {})
    opened, closed = limit.get("opened", []), limit.get("closed", [])
    if len(opened) < 7 or None in opened or not closed or limit.get("fetch_done") is None:
        return Verdict("six EventSources opened at once; the seventh and a fetch waited until one closed",
                       False, f"opened at {opened}, closed at {closed}, fetch {limit.get('fetch_done')}")
    first_six, seventh = max(opened[:6]), opened[6]
    waited = seventh - closed[0]
    return Verdict("six EventSources opened at once; the seventh, and a fetch to the same host, waited until "
                   "one closed", first_six < closed[0] and seventh >= closed[0] - u
                   and limit["fetch_done"] >= closed[0] - u,
                   f"six open by {first_six:.2f} s; the seventh opened at {seventh:.2f} s, {waited * 1000:.0f} ms "
                   f"after the first closed ({closed[0]:.2f} s); the fetch sent at {limit['fetch_sent']:.2f} s "
                   f"came back at {limit['fetch_done']:.2f} s")


def _chat_claims(run) -> list[Verdict]:
    """The learner's browser and the kernel's bots in one room: both ways, and what the browser sent."""
    verdicts = []
    for log in run.logs.values():
        via = "directly" if log.route == "direct" else "through jupyter-server-proxy"
        if log.failed:
            verdicts.append(Verdict(f"the browser's WebSocket connected {via}", None, log.failed))
            continue
        me = f"browser-{log.route}"
        heard = log.notes.get("heard", [])
        from_bots = sum(m.get("from", "").startswith("bot-") for m in heard)
        to_bots = sum(m.get("from") == me for m in run.bot_heard)
        verdicts.append(Verdict(f"the browser's WebSocket connected {via}, and messages crossed both ways",
                                log.ready and from_bots > 0 and to_bots > 0,
                                f"the browser heard {from_bots} bot messages; the bots heard the browser "
                                f"{to_bots} times"))
        seen = [w for w in run.witnessed if w["name"] == me]
        origin = seen[0]["origin"] if seen else None
        verdicts.append(Verdict(f"{via}, the browser's WebSocket sent this page's Origin and no Authorization "
                                "header (the API cannot add one)",
                                bool(seen) and origin in run.allowed_origins and not seen[0]["authorization"],
                                f"Origin: {origin}; cookies: {', '.join(seen[0]['cookies']) if seen else '-'}"))
    verdicts.append(Verdict("a page from another origin was refused by the server's Origin check",
                            run.forged_origin_status == 403, f"handshake answered {run.forged_origin_status}"))
    return verdicts
