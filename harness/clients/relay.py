"""A recording relay: the real client's bytes go to the target as they come, and a copy is read for the transcript.

Every real client (Runner, worker, task worker) talks to the target through one, so its cost is paid on every
request of every run. :class:`~harness.clients.recorder.ReverseProxy` parses each request and answer in Python,
forwards them with an HTTP client and answers through an ASGI server: +18-23 % on a 5-ms request. This relay
forwards the target's answers byte for byte (chunks as they arrive, compression, websocket frames and all) and
parses a copy of them with httptools afterwards; a request is forwarded once its head is read, with two headers
rewritten (``Host`` names the target, as an HTTP client would send it; nothing else changes) and its body as it
comes. Summaries for the transcript and the answers' decoding (gzip) wait until someone reads them.

It records what :class:`ReverseProxy` records (:class:`~harness.clients.transcript.Exchange`), and keeps whole
successful JSON answers the same way; it cannot change the traffic, so deviating targets (the project's own
tests) stay with the parsing proxy.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools

from harness.clients.transcript import Exchange, summarize_body
from harness.target.tls import tls_context

#: The most answer bytes one relay keeps whole for :meth:`RecordingRelay.answers` (as the proxy's).
MAX_KEPT_BYTES = 64 * 1024 * 1024
#: A body longer than this is kept only this far for its summary (a summary shows 300 characters).
SUMMARY_BYTES = 1024 * 1024
READ_SIZE = 256 * 1024


@dataclass
class _Seen:
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
        latency = round((self.finished - self.started) * 1000, 2)
        if self.websocket:
            summary = self.detail or f"target refused the websocket: {self.status} {summarize_body(self.body(), 120)}"
            return Exchange(actor, "WS", self.path, self.status, self.started, latency, self.offered, summary, True,
                            self.subprotocol, self.user_agent)
        return Exchange(actor, self.method, self.path, self.status, self.started, latency,
                        summarize_body(self.request_body), summarize_body(self.body(), 160) or self.detail,
                        user_agent=self.user_agent)


@dataclass
class RecordingRelay:
    """A recording relay on a free loopback port in a background thread; use as a context manager.

    ``api_url`` is what a client puts in ``PREFECT_API_URL``: the upstream API URL with the relay's origin.
    """

    upstream_api_url: str
    actor: str = "client"
    #: Keep the whole body of each successful JSON answer (up to ``MAX_KEPT_BYTES``), as the proxy does.
    keep_answers: bool = False
    #: Rewrite ``Host`` to the target's own name in every request head; default: only for a target named by a
    #: DNS name other than ``localhost`` (see ``__post_init__``).
    rewrite_host: bool | None = None
    port: int = field(default=0, init=False)
    _seen: list[_Seen] = field(default_factory=list, init=False, repr=False)
    _kept_bytes: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream_api_url.rstrip("/"))
        self._secure = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._secure else 80)
        self._netloc = parts.netloc.rsplit("@", 1)[-1].encode("latin-1")
        self._api_path = parts.path
        #: A server on a loopback or IP address answers whatever ``Host`` says (Prefect's builds its redirects
        #: from it, so they come back through the relay); a named one may be one of several behind a proxy and
        #: must be asked for by its own name: then each request head is rewritten before it is sent on.
        self._rewrites_host = not _is_address(self._host) if self.rewrite_host is None else self.rewrite_host

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._api_path}"

    def __enter__(self) -> "RecordingRelay":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, see recorder
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                server = loop.run_until_complete(asyncio.start_server(self._connection, sock=sock, limit=READ_SIZE))
            except BaseException as exc:  # reported by start()
                failure.append(exc)
                started.set()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:  # let each connection close its sockets
                    loop.run_until_complete(asyncio.wait(tasks, timeout=5))
                loop.close()

        self._thread = threading.Thread(target=run, name=f"relay-{self.actor}", daemon=True)
        self._thread.start()
        if not started.wait(10) or failure:
            raise RuntimeError(f"the {self.actor} relay did not start listening within 10s: {failure}")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = None
        self._thread = None

    # --- transcript (the same interface as the proxy's) ----------------------------------------------------

    def transcript(self) -> list[Exchange]:
        with self._lock:
            seen = [s for s in self._seen if s.status]
        return [s.exchange(self.actor) for s in seen]

    def requests_to(self, method: str, path_suffix: str) -> list[Exchange]:
        """Recorded exchanges whose method matches and whose path (below the API root) ends with ``path_suffix``."""
        return [e for e in self.transcript() if e.method == method and e.path.endswith(path_suffix)]

    def write_transcript(self, path: Path) -> None:
        from dataclasses import asdict

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            for exchange in self.transcript():
                out.write(json.dumps(asdict(exchange)) + "\n")

    def answers(self) -> list[tuple[Exchange, bytes]]:
        """Successful JSON answers with their whole bodies, in order."""
        with self._lock:
            kept = [s for s in self._seen if s.status and self._keeps(s)]
        return [(s.exchange(self.actor), s.body()) for s in kept]

    def _keeps(self, seen: _Seen) -> bool:
        return self.keep_answers and not seen.websocket and 200 <= seen.status < 300 and "json" in seen.content_type \
            and bool(seen.response_body)

    def _relative(self, path: str) -> str:
        return path[len(self._api_path):] if path.startswith(self._api_path) else path

    # --- the relay ---------------------------------------------------------------------------------------

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        pending: deque[_Seen] = deque()
        requests = _Requests(self, pending)
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(
                self._host, self._port, ssl=tls_context() if self._secure else None,
                server_hostname=self._host if self._secure else None, limit=READ_SIZE), timeout=10)
        except (OSError, asyncio.TimeoutError) as exc:
            await self._unreachable(client_reader, client_writer, requests, pending, exc)
            return
        upstream_writer.transport.set_write_buffer_limits(high=4 * READ_SIZE)
        answers = _Answers(self, pending)

        async def to_target() -> None:
            while data := await client_reader.read(READ_SIZE):
                if requests.rewrites:
                    upstream_writer.write(requests.feed(data))
                else:
                    upstream_writer.write(data)  # first the target, then the copy
                    requests.feed(data)
                await upstream_writer.drain()
            if upstream_writer.can_write_eof():
                upstream_writer.write_eof()

        async def to_client() -> None:
            while data := await upstream_reader.read(READ_SIZE):
                client_writer.write(data)  # first the client, then the copy
                answers.feed(data)
                await client_writer.drain()

        tasks = [asyncio.ensure_future(to_target()), asyncio.ensure_future(to_client())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if tasks[0] in done and not tasks[0].exception():  # the client is done sending: let the answers finish
                await asyncio.wait([tasks[1]], timeout=120)
        except asyncio.CancelledError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            answers.closed()
            for writer in (upstream_writer, client_writer):
                writer.close()

    async def _unreachable(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, requests: "_Requests",
                           pending: deque[_Seen], exc: BaseException) -> None:
        """The client sees what a dead target looks like, as through the proxy: a 502 naming the failure."""
        try:
            data = await asyncio.wait_for(reader.read(READ_SIZE), timeout=10)
            requests.feed(data)
        except (OSError, asyncio.TimeoutError):
            pass
        body = json.dumps({"detail": f"relay could not reach the target: {exc!r}"}).encode()
        for seen in list(pending):
            self._finish(seen, 502, body, "application/json", "")
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        try:
            await writer.drain()
        finally:
            writer.close()

    def _begin(self, seen: _Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def _finish(self, seen: _Seen, status: int, body: bytes, content_type: str, encoding: str,
                subprotocol: str | None = None) -> None:
        seen.finished = time.time()
        seen.content_type, seen.content_encoding, seen.subprotocol = content_type, encoding, subprotocol
        with self._lock:
            keep = self.keep_answers and 200 <= status < 300 and "json" in content_type and \
                self._kept_bytes + len(body) <= MAX_KEPT_BYTES
            if keep:
                self._kept_bytes += len(body)
            seen.response_body = body if keep else body[:SUMMARY_BYTES]
            seen.status = status  # last: a transcript shows an exchange once it is complete


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host == "localhost"


class _Requests:
    """The client's side of one connection: each request's head is read, ``Host`` rewritten and forwarded with
    its body as it comes; after a websocket upgrade, frames pass untouched."""

    def __init__(self, relay: RecordingRelay, pending: deque[_Seen]) -> None:
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
        self.chunked = False

    def feed(self, data: bytes) -> bytes:
        if self.raw:
            return data
        self.out = []
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.raw = True
            self.out.append(data[upgrade.args[0]:])
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
        self.seen = _Seen(method.decode(), self.relay._relative(path), time.time(),
                          lower.get(b"user-agent", b"").decode("latin-1"), b"", websocket,
                          f"subprotocols={[p.strip() for p in lower.get(b'sec-websocket-protocol', b'').decode('latin-1').split(',') if p.strip()]}")
        self.pending.append(self.seen)
        self.relay._begin(self.seen)

    def on_body(self, body: bytes) -> None:
        if self.rewrites:
            self.out.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)
        if sum(len(b) for b in self.body) < SUMMARY_BYTES:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.chunked and self.rewrites:
            self.out.append(b"0\r\n\r\n")
        self.seen.request_body = b"".join(self.body)
        self._reset()


class _Answers:
    """A copy of the target's side of one connection, read after it was sent on: each answer completes the oldest
    request still waiting; a ``101`` turns the connection into a websocket session, recorded when it ends."""

    def __init__(self, relay: RecordingRelay, pending: deque[_Seen]) -> None:
        self.relay, self.pending = relay, pending
        self.parser: Any = httptools.HttpResponseParser(self)
        self.raw = False
        self.session: _Seen | None = None
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
            self.relay._finish(self.session, 101, b"", "", "", self.session.subprotocol)
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
            self.session.status = 0
            self.session.subprotocol = self.headers.get(b"sec-websocket-protocol", b"").decode("latin-1") or None

    def on_body(self, body: bytes) -> None:
        if self.size < MAX_KEPT_BYTES:
            self.body.append(body)
            self.size += len(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200 and self.pending:
            self.relay._finish(self.pending.popleft(), status, b"".join(self.body),
                               self.headers.get(b"content-type", b"").decode("latin-1"),
                               self.headers.get(b"content-encoding", b"").decode("latin-1").lower())
        self._reset()
