"""Reading what a client sends, strictly: request sizes, cursors and JSON bodies.

Python is lenient where a server should not be. ``int()`` takes ``"١"`` (Arabic-Indic one),
``"0_0"``, ``"+0"`` and ``" 7 "``, and raises (not ValueError but a limit error) past 4,300
digits; ``json.loads`` takes ``NaN`` and ``Infinity``, which are not JSON (RFC 8259 6), and
raises ``RecursionError`` on deeply nested brackets. Both functions here answer a plain
``None`` or ``ValueError`` with a reason a client can act on.
"""

from __future__ import annotations

import http.client
import json
import re

import tornado.web

_CURSOR = re.compile(r"[0-9]{1,18}")  # ASCII digits, short enough for any sequence number
MAX_TARGET = 8 * 1024     # bytes of request target (path and query), as nginx's default buffer
MAX_HEADERS = 16 * 1024   # bytes of header fields


class SizeLimits:
    """Mix into a RequestHandler: 414 for a long target (RFC 9110 15.5.15), 431 for big headers (RFC 6585 5).

    The lab's servers read up to 128 KiB of request head (``serving.MAX_HEAD``) and close the
    connection without an answer beyond it; below that, these limits give the client a status it can read.
    """

    def prepare(self) -> None:
        if len(self.request.uri) > MAX_TARGET:
            raise tornado.web.HTTPError(414, reason="URI Too Long")
        size = sum(len(name) + len(value) + 4 for name, value in self.request.headers.get_all())
        if size > MAX_HEADERS:
            raise tornado.web.HTTPError(431, reason="Request Header Fields Too Large")


@tornado.web.stream_request_body
class GetOnly(SizeLimits, tornado.web.RequestHandler):
    """Mix in first for a handler that answers GET, and no other method it does not implement itself
    (a CORS preflight's ``OPTIONS``, say). Any other method gets 405, naming the allowed ones in
    ``Allow`` (RFC 9110 15.5.6), as soon as its head arrives: a 50 MB POST is refused without
    reading a byte of its body. (Tornado reads a whole body before it looks at the method, unless
    the handler streams request bodies, as this one does.) The connection then ends; the lab's
    servers drain what the client still sends, so that it can read the answer (``serving.LINGER``)."""

    def prepare(self) -> None:
        super().prepare()
        allowed = ["GET"] + [m for m in self.SUPPORTED_METHODS if m != "GET" and self.implements(m)]
        if self.request.method not in allowed:
            self.set_status(405)
            self.set_header("Allow", ", ".join(allowed))
            self.finish({"error": f"{self.request.method} is not allowed here: only {' and '.join(allowed)}."})

    def implements(self, method: str) -> bool:
        """Whether this handler's class defines ``method`` itself (Tornado's default answers 405)."""
        return getattr(type(self), method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())

    def data_received(self, chunk: bytes) -> None:
        """A GET's body, should a client send one: dropped, as RFC 9110 9.3.1 gives it no meaning."""


def cursor(text: str) -> int | None:
    """A sequence number sent by a client (ASCII digits only), or None if ``text`` is not one."""
    return int(text) if _CURSOR.fullmatch(text) else None


def strict_json(data: str | bytes):
    """Parse JSON as RFC 8259 defines it; ``ValueError`` with a reason if it is not."""
    try:
        return json.loads(data, parse_constant=_not_json)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON value")


def error_reason(status_code: int, **error) -> str:
    """The reason phrase of an error answer, from what ``write_error`` is given: an ``HTTPError``'s
    reason, a ``reason`` passed to ``send_error``, else the standard phrase (as Tornado's status line)."""
    raised = error.get("exc_info", (None, None, None))[1]
    reason = getattr(raised, "reason", None) or error.get("reason")
    return reason or http.client.responses.get(status_code, "Unknown")
