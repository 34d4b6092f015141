"""A recording relay: the real client's bytes go to the target as they come, and a copy is read for the transcript.

Every real client (Runner, worker, task worker) talks to the target through one, so its cost is paid on every
request of every run. :class:`~tests.deviating_proxy.DeviatingProxy` parses each request and answer in Python,
forwards them with an HTTP client and answers through an ASGI server: +18-23 % on a 5-ms request. This relay
passes bytes between two asyncio protocols (chunks as they arrive, compression, websocket frames and all) and
parses a copy of them with httptools once the events already waiting are handled, so reading never delays
forwarding; it costs what a relay that reads nothing costs (+4-5 %, ``make bench``). Only for a target named by a
DNS name is each request's head read first, to rewrite ``Host`` to that name (a proxy in front of several servers
needs it); nothing else changes. Summaries and the answers' decoding (gzip) wait until someone reads them.

It records what :class:`DeviatingProxy` records (:class:`~harness.clients.transcript.Exchange`), and keeps whole
successful JSON answers the same way; it cannot change the traffic, so deviating targets (the project's own
tests) stay with the parsing proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from harness.clients.relay_reading import SUMMARY_BYTES, AnswerReader, RequestReader, Seen
from harness.clients.transcript import MAX_KEPT_BYTES, Exchange, Recorded, api_relative
from harness.target.tls import tls_context


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (a dependency except on Windows), else asyncio's.

    The relay's own cost per request is mostly its event loop's hops, and uvloop's are cheaper (``make bench``
    measures the relay's overhead; docs/status.md keeps the figures)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@dataclass
class RecordingRelay(Recorded):
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
    _seen: list[Seen] = field(default_factory=list, init=False, repr=False)
    _kept_bytes: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _sides: set = field(default_factory=set, init=False, repr=False)  # open connections' ends (see stop)

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

    def start(self) -> None:
        sock = self._listen()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = new_event_loop()
            self._loop = loop
            try:
                server = loop.run_until_complete(loop.create_server(lambda: _ClientSide(self), sock=sock))
            except BaseException as exc:  # reported by start()
                failure.append(exc)
                started.set()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for side in list(self._sides):
                    if side.transport is not None:
                        side.transport.abort()
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.sleep(0))  # the transports' close callbacks
                if tasks:
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

    # --- transcript (read through Recorded, as the proxy's) ---------------------------------------------

    def transcript(self) -> list[Exchange]:
        with self._lock:
            seen = [s for s in self._seen if s.status]
        return [s.exchange(self.actor) for s in seen]

    def accepted_bodies(self, method: str, path_suffix: str) -> list[Any]:
        """The parsed JSON bodies of the client's requests to ``path_suffix`` that the target answered 2xx, in
        order: what a real client sent that the target took (the log lines of ``POST /logs/``, say)."""
        return [
            json.loads(body)
            for status, _, body in self.answered(method, (path_suffix,))
            if 200 <= status < 300 and body
        ]

    def answered(self, method: str, path_suffixes: tuple[str, ...]) -> list[tuple[int, float, bytes]]:
        """(status, when it was answered, request body) of the client's answered requests to any of
        ``path_suffixes``, in order: cheap enough to read several times a second while the client runs (nothing is
        summarised), for a harness that acts on the target's answers as they come."""
        with self._lock:
            seen = [
                s
                for s in self._seen
                if s.method == method and s.status and api_relative(s.path, self._api_path).endswith(path_suffixes)
            ]
        return [(s.status, s.finished, s.request_body) for s in seen]

    def answers(self) -> list[tuple[Exchange, bytes]]:
        """Successful JSON answers with their whole bodies, in order."""
        with self._lock:
            kept = [s for s in self._seen if s.status and s.kept]
        return [(s.exchange(self.actor), s.body()) for s in kept]

    # --- the relay ---------------------------------------------------------------------------------------

    def _begin(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def _finish(self, seen: Seen, status: int, body: bytes, content_type: str, encoding: str) -> None:
        seen.finished = time.time()
        seen.content_type, seen.content_encoding = content_type, encoding
        with self._lock:
            seen.kept = (
                self.keep_answers
                and not seen.websocket
                and 200 <= status < 300
                and "json" in content_type
                and bool(body)
                and self._kept_bytes + len(body) <= MAX_KEPT_BYTES
            )
            if seen.kept:
                self._kept_bytes += len(body)
            seen.response_body = body if seen.kept else body[:SUMMARY_BYTES]
            seen.status = status  # last: a transcript shows an exchange once it is complete


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host == "localhost"


class _Side(asyncio.Protocol):
    """One end of a relayed connection. What it receives goes to its peer's transport before anything else is
    done with it; when the peer cannot take more, this end stops reading (and resumes with it)."""

    def __init__(self, relay: RecordingRelay) -> None:
        self.relay = relay
        self.transport: Any = None
        self.peer: _Side | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.relay._sides.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay._sides.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _ClientSide(_Side):
    """The real client's connection: requests go to the target (head rewritten where the target needs its name)."""

    def __init__(self, relay: RecordingRelay) -> None:
        super().__init__(relay)
        self.pending: deque[Seen] = deque()
        self.requests = RequestReader(relay, self.pending)
        self.early: list[bytes] = []  # what the client sent before the target's connection was up
        self.eof = False
        self.unreachable: BaseException | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        relay = self.relay
        try:
            _, target = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    lambda: _TargetSide(relay, self),
                    relay._host,
                    relay._port,
                    ssl=tls_context() if relay._secure else None,
                    server_hostname=relay._host if relay._secure else None,
                ),
                timeout=10,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self.unreachable = exc
            if self.early:
                self._answer_unreachable()
            return
        if self.transport.is_closing():
            target.transport.close()
            return
        self.peer, target.peer = target, self
        for data in self.early:
            self._send(data)
        self.early.clear()
        if self.eof and target.transport.can_write_eof():
            target.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
            if self.unreachable is not None:
                self._answer_unreachable()
            return
        self._send(data)

    def _send(self, data: bytes) -> None:
        target = self.peer.transport
        if self.requests.rewrites:
            target.write(self.requests.feed(data))
        else:
            target.write(data)  # first the target, then the copy, after the other ready events (see _TargetSide)
            self.loop.call_soon(self.requests.feed, data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        return True  # half-closed: the answers still come back

    def _answer_unreachable(self) -> None:
        """The client sees what a dead target looks like, as through the proxy: a 502 naming the failure."""
        for data in self.early:
            self.requests.feed(data)
        self.early.clear()
        body = json.dumps({"detail": f"relay could not reach the target: {self.unreachable!r}"}).encode()
        for seen in list(self.pending):
            self.relay._finish(seen, 502, body, "application/json", "")
        self.pending.clear()
        self.transport.write(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


class _TargetSide(_Side):
    """The connection to the target: answers go to the client as they come, and a copy to the transcript."""

    def __init__(self, relay: RecordingRelay, client: _ClientSide) -> None:
        super().__init__(relay)
        self.client = client
        self.answers = AnswerReader(relay, client.pending)

    def data_received(self, data: bytes) -> None:
        # First the client; the copy is read after the events already waiting (the rest of the answer often
        # is: a server writes an answer's head and body separately), so reading it never delays them.
        self.client.transport.write(data)
        self.loop.call_soon(self.answers.feed, data)

    def eof_received(self) -> bool:
        if self.client.transport.can_write_eof():
            self.client.transport.write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.loop.call_soon(self.answers.closed)  # after the copies still waiting to be read
        self.client.transport.close()
        super().connection_lost(exc)
