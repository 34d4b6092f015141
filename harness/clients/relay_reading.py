"""The relay's reading of the traffic it passes on: each request's head (read before it is forwarded, to rewrite
``Host``), and a copy of the target's answers read after they were sent, parsed with httptools into what a transcript
records (:class:`Seen`, one exchange)."""

from __future__ import annotations

import gzip
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import httptools

from harness.clients.transcript import MAX_KEPT_BYTES, Exchange, api_relative, summarize_body


class Relay(Protocol):
    """What the readers need of the relay whose traffic they read (:class:`~harness.clients.relay.RecordingRelay`):
    where the API lives, whether ``Host`` is rewritten, and where a seen exchange begins and ends."""

    _api_path: str
    _netloc: bytes
    _rewrites_host: bool

    def _begin(self, seen: Seen) -> None: ...

    def _finish(self, seen: Seen, status: int, body: bytes, content_type: str, encoding: str) -> None: ...


#: The most answer bytes one relay keeps whole for its answers (as the deviating proxy does).
#: A body longer than this is kept only this far for its summary (a summary shows 300 characters).
SUMMARY_BYTES = 1024 * 1024


@dataclass
class Seen:
    """One exchange as the relay saw it; turned into an :class:`Exchange` when a transcript is read."""

    method: str
    path: str
    started: float
    user_agent: str
    request_body: bytes
    websocket: bool
    offered: str = ""
    status: int = 0
    finished: float = 0.0
    response_body: bytes = b""
    content_type: str = ""
    content_encoding: str = ""
    subprotocol: str | None = None
    detail: str = ""
    kept: bool = False  # the whole body is kept for ``answers()``
    _exchange: Exchange | None = None  # built once: a transcript is read at every poll of a wait

    def body(self) -> bytes:
        """The answer's body as the client decoded it (gzip and deflate undone)."""
        try:
            if self.content_encoding == "gzip":
                return gzip.decompress(self.response_body)
            if self.content_encoding == "deflate":
                return zlib.decompress(self.response_body)
        except (OSError, zlib.error, EOFError):
            return self.response_body
        return self.response_body

    def exchange(self, actor: str) -> Exchange:
        """The transcript's record of this exchange, once it is complete (summarised the first time it is read)."""
        if self._exchange is None:
            self._exchange = self._summarised(actor)
        return self._exchange

    def _summarised(self, actor: str) -> Exchange:
        latency = round((self.finished - self.started) * 1000, 2)
        if self.websocket:
            summary = self.detail or f"target refused the websocket: {self.status} {summarize_body(self.body(), 120)}"
            return Exchange(
                actor,
                "WS",
                self.path,
                self.status,
                self.started,
                latency,
                self.offered,
                summary,
                True,
                self.subprotocol,
                self.user_agent,
            )
        return Exchange(
            actor,
            self.method,
            self.path,
            self.status,
            self.started,
            latency,
            summarize_body(self.request_body),
            summarize_body(self.body(), 160) or self.detail,
            user_agent=self.user_agent,
        )


class RequestReader:
    """The client's side of one connection: each request's head is read, ``Host`` rewritten and forwarded with
    its body as it comes; after a websocket upgrade, frames pass untouched."""

    def __init__(self, relay: Relay, pending: deque[Seen]) -> None:
        self.relay, self.pending = relay, pending
        self.rewrites = relay._rewrites_host
        self.parser: Any = httptools.HttpRequestParser(self)
        self.raw = False
        self.out: list[bytes] = []
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.chunked = False

    def feed(self, data: bytes) -> bytes:
        if self.raw:
            return data
        self.out = []
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.raw = True
            self.out.append(data[upgrade.args[0] :])
        except httptools.HttpParserError:
            self.raw = True  # not HTTP the relay can read: passed on as it is, no longer recorded
            return b"".join(self.out) + data
        return b"".join(self.out)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        lower = {name.lower(): value for name, value in self.headers}
        self.chunked = b"chunked" in lower.get(b"transfer-encoding", b"").lower()
        method = self.parser.get_method()
        if self.rewrites:
            head = [b"%s %s HTTP/%s\r\n" % (method, self.url, self.parser.get_http_version().encode())]
            for name, value in self.headers:
                head.append(b"%s: %s\r\n" % (name, self.relay._netloc if name.lower() == b"host" else value))
            head.append(b"\r\n")
            self.out.append(b"".join(head))
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        websocket = lower.get(b"upgrade", b"").lower() == b"websocket"
        offered = lower.get(b"sec-websocket-protocol", b"").decode("latin-1").split(",")
        subprotocols = [p.strip() for p in offered if p.strip()]
        self.seen = Seen(
            method.decode(),
            api_relative(path, self.relay._api_path),
            time.time(),
            lower.get(b"user-agent", b"").decode("latin-1"),
            b"",
            websocket,
            f"subprotocols={subprotocols}",
        )
        self.pending.append(self.seen)
        self.relay._begin(self.seen)

    def on_body(self, body: bytes) -> None:
        if self.rewrites:
            self.out.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)
        if self.size < SUMMARY_BYTES:
            self.body.append(body)
            self.size += len(body)

    def on_message_complete(self) -> None:
        if self.chunked and self.rewrites:
            self.out.append(b"0\r\n\r\n")
        self.seen.request_body = b"".join(self.body)
        self._reset()


class AnswerReader:
    """A copy of the target's side of one connection, read after it was sent on: each answer completes the oldest
    request still waiting; a ``101`` turns the connection into a websocket session, recorded when it ends."""

    def __init__(self, relay: Relay, pending: deque[Seen]) -> None:
        self.relay, self.pending = relay, pending
        self.parser: Any = httptools.HttpResponseParser(self)
        self.raw = False
        self.session: Seen | None = None
        self.bytes_out = 0
        self._reset()

    def _reset(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        if self.raw:
            self.bytes_out += len(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.raw = True
            self.bytes_out += len(data) - upgrade.args[0]
        except httptools.HttpParserError:
            self.raw = True

    def closed(self) -> None:
        if self.session is not None:
            self.session.detail = f"websocket session ended; target->client {self.bytes_out} bytes"
            self.relay._finish(self.session, 101, b"", "", "")
        for seen in self.pending:  # asked, never answered: the connection closed first
            if not seen.status:
                seen.detail = "the target closed the connection without answering"
                self.relay._finish(seen, 502, b"", "", "")
        self.pending.clear()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101 and self.pending:
            self.session = self.pending.popleft()
            self.session.subprotocol = self.headers.get(b"sec-websocket-protocol", b"").decode("latin-1") or None

    def on_body(self, body: bytes) -> None:
        if self.size < MAX_KEPT_BYTES:
            self.body.append(body)
            self.size += len(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200 and self.pending:
            self.relay._finish(
                self.pending.popleft(),
                status,
                b"".join(self.body),
                self.headers.get(b"content-type", b"").decode("latin-1"),
                self.headers.get(b"content-encoding", b"").decode("latin-1").lower(),
            )
        self._reset()
