"""A recording reverse proxy between a client and a target, that can change the traffic.

It parses each request and answer, forwards them with an HTTP client, websockets included with their
``prefect`` subprotocol, and keeps a transcript of what the client asked and what the target answered. Given
a ``deviation`` (the project's own tests define them), it becomes a deliberately non-conforming target: that is
how the tests show every check fails when the server gets something wrong.

Real clients do not talk through it: their recorder is :class:`~harness.clients.relay.RecordingRelay`, which
records the same transcript at a fraction of the cost (it forwards bytes and reads a copy) but changes nothing.
The transcript's format lives in :mod:`harness.clients.transcript`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import multidict
import uvicorn
import yarl

from harness.clients.transcript import MAX_KEPT_BYTES, Exchange, Recorded, api_relative, summarize_body
from harness.target.tls import tls_context

#: The most answer bytes one recorder keeps whole (a Runner's run keeps a few hundred kB).

HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "proxy-connection",
        "te",
        "trailer",
        "accept-encoding",
        "expect",
    }
)


@dataclass
class ProxyRequest:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    #: The path as the client sent it, still percent-encoded: what is forwarded.
    raw_path: str = ""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def set_json(self, document: Any) -> None:
        self.body = json.dumps(document).encode()


@dataclass
class ProxyResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def set_json(self, document: Any) -> None:
        self.body = json.dumps(document).encode()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "content-type"] + [
            ("content-type", "application/json")
        ]

    @classmethod
    def of_json(cls, status: int, document: Any) -> "ProxyResponse":
        return cls(status, [("content-type", "application/json")], json.dumps(document).encode())


@dataclass
class DeviatingProxy(Recorded):
    """A reverse proxy on a free loopback port in a background thread; use as a context manager.

    ``api_url`` is what a client puts in ``PREFECT_API_URL``: the upstream API URL with the proxy's origin.
    """

    upstream_api_url: str
    actor: str = "client"
    #: An object that changes the traffic (``latency``, ``on_request``, ``on_response``, ``on_websocket``):
    #: the project's own tests make deliberately non-conforming targets with it (``tests/deviations/``); it is told
    #: the upstream it fronts (``bind``) when it has a ``bind``.
    deviation: Any = None
    exchanges: list[Exchange] = field(default_factory=list, init=False)
    #: Keep the whole body of each successful JSON answer beside its exchange (up to ``MAX_KEPT_BYTES``), for
    #: the checks that judge a real client's traffic by Prefect's schema; a transcript keeps only summaries.
    keep_answers: bool = False
    kept: list[tuple[Exchange, bytes]] = field(default_factory=list, init=False)
    _kept_bytes: int = field(default=0, init=False, repr=False)
    port: int = field(default=0, init=False)
    _server: uvicorn.Server | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if hasattr(self.deviation, "bind"):
            self.deviation.bind(self.upstream_api_url)
        parts = urlsplit(self.upstream_api_url.rstrip("/"))
        self._upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self._api_path = parts.path

    def start(self) -> None:
        sock = self._listen()  # uvicorn writes an answer's head and body separately: see _listen on TCP_NODELAY
        # No Date or Server header of the proxy's own: the target's pass through, once (its Date is its clock).
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            http="httptools",
            lifespan="off",
            log_level="critical",
            ws="websockets-sansio",
            ws_ping_interval=None,
            timeout_graceful_shutdown=2,
            date_header=False,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()

        async def main() -> None:
            # aiohttp, not httpx, upstream: it halved the recorder's added latency (+42 % to +20 % on a 5-ms
            # request, `make bench`). It adds no header the client did not send, keeps no cookies (one proxy
            # serves one actor, but a cookie is the target's to set and the client's to keep), and drops an idle
            # connection before a server's usual 5-s keep-alive ends, so a POST never lands on a closing one.
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, ssl=tls_context(), keepalive_timeout=4.0),
                timeout=aiohttp.ClientTimeout(total=60.0, connect=5.0),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
            try:
                serve = asyncio.ensure_future(self._server.serve(sockets=[sock]))
                while not self._server.started and not serve.done():
                    await asyncio.sleep(0.01)  # poll uvicorn's own readiness flag
                started.set()
                await serve
            finally:
                started.set()
                await self._http.close()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name=f"proxy-{self.actor}", daemon=True)
        self._thread.start()
        if not started.wait(10) or not self._server.started:
            raise RuntimeError(f"the {self.actor} proxy did not start listening within 10s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    # --- transcript -------------------------------------------------------------------------------------

    def transcript(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)

    def answers(self) -> list[tuple[Exchange, bytes]]:
        """Successful JSON answers with their whole bodies, in order."""
        with self._lock:
            return list(self.kept)

    def _record(self, exchange: Exchange, body: bytes = b"", content_type: str = "") -> None:
        with self._lock:
            self.exchanges.append(exchange)
            if (
                self.keep_answers
                and body
                and 200 <= exchange.status < 300
                and "json" in content_type
                and self._kept_bytes + len(body) <= MAX_KEPT_BYTES
            ):
                self.kept.append((exchange, body))
                self._kept_bytes += len(body)

    # --- ASGI ---------------------------------------------------------------------------------------------

    async def _asgi(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http_exchange(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket_session(scope, receive, send)

    async def _http_exchange(self, scope: dict, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        request = ProxyRequest(
            scope["method"],
            scope["path"],
            scope["query_string"].decode(),
            headers,
            body,
            scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
        )
        started = time.time()
        hook = self.deviation
        if hook is not None and hook.latency:
            await asyncio.sleep(hook.latency)
        response = hook.on_request(request) if hook is not None else None
        if response is None:
            response = await self._forward(request)
            if hook is not None:
                response = hook.on_response(request, response)
        self._record(
            Exchange(
                actor=self.actor,
                method=request.method,
                path=api_relative(request.path, self._api_path),
                status=response.status,
                started=started,
                latency_ms=round((time.time() - started) * 1000, 2),
                request_summary=summarize_body(request.body),
                response_summary=summarize_body(response.body, 160),
                user_agent=user_agent(scope),
            ),
            response.body,
            next((v for k, v in response.headers if k.lower() == "content-type"), ""),
        )
        out_headers = [(k, v) for k, v in response.headers if k.lower() not in HOP_BY_HOP]
        out_headers.append(("content-length", str(len(response.body))))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _forward(self, request: ProxyRequest) -> ProxyResponse:
        url = yarl.URL(
            self._upstream_origin + request.raw_path + (f"?{request.query}" if request.query else ""), encoded=True
        )
        headers = multidict.CIMultiDict((k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP)
        headers["accept-encoding"] = "identity"
        try:
            async with self._http.request(
                request.method, url, headers=headers, data=request.body or None, allow_redirects=False
            ) as upstream:
                body = await upstream.read()
                answered = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in upstream.raw_headers]
                return ProxyResponse(upstream.status, answered, body)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # The client sees what a dead target looks like: a 502 naming the failure.
            return ProxyResponse.of_json(502, {"detail": f"proxy could not reach the target: {exc!r}"})

    async def _websocket_session(self, scope: dict, receive: Any, send: Any) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        path = scope["path"]
        started = time.time()
        await receive()  # websocket.connect
        refused = self.deviation.on_websocket(path) if self.deviation is not None else None
        offered = scope.get("subprotocols") or []

        def record(status: int, subprotocol: str | None = None, detail: str = "") -> None:
            self._record(
                Exchange(
                    self.actor,
                    "WS",
                    api_relative(path, self._api_path),
                    status,
                    started,
                    round((time.time() - started) * 1000, 2),
                    f"subprotocols={offered}",
                    detail,
                    True,
                    subprotocol,
                    user_agent(scope),
                )
            )

        if refused is not None and refused < 1000:  # an HTTP status: answer the handshake with it, as a server
            body = b'{"detail":"Not Found"}' if refused == 404 else b""  # without the route does (FastAPI's body)
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": refused,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            record(refused, detail=f"refused with HTTP {refused}")
            return
        if refused is not None:  # a close code: the handshake is answered 403, as Starlette does
            await send({"type": "websocket.close", "code": refused})
            record(403, detail=f"refused with close code {refused}")
            return
        ws_origin = self._upstream_origin.replace("http", "ws", 1)
        query = scope["query_string"].decode()
        url = ws_origin + path + (f"?{query}" if query else "")
        passthrough = {"authorization"}
        extra = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.decode().lower() in passthrough]
        try:
            upstream = await connect(
                url,
                subprotocols=offered or None,
                additional_headers=extra,
                proxy=None,
                ping_interval=None,
                open_timeout=10,
                max_size=None,
            )
        except Exception as exc:
            # Record what the target answered to the handshake (e.g. 403/404), or 502 if it never answered.
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", None) or 502
            await send({"type": "websocket.close", "code": 1008 if status < 500 else 1011})
            if response is not None:
                body = bytes(getattr(response, "body", b"") or b"").decode(errors="replace")[:120]
                detail = f"target refused the websocket: {status} {getattr(response, 'reason_phrase', '')} {body!r}"
            else:
                detail = f"target never answered the websocket handshake: {type(exc).__name__}: {exc}"
            record(status, detail=detail)
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        counts = {"in": 0, "out": 0}

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close()
                    return
                counts["in"] += 1
                await upstream.send(message.get("text") if message.get("text") is not None else message.get("bytes"))

        async def upstream_to_client() -> None:
            try:
                async for data in upstream:
                    counts["out"] += 1
                    key = "text" if isinstance(data, str) else "bytes"
                    await send({"type": "websocket.send", key: data})
            except ConnectionClosed:
                pass
            try:
                await send({"type": "websocket.close", "code": upstream.close_code or 1000})
            except Exception:
                pass

        tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()
            record(101, upstream.subprotocol, f"messages client->target {counts['in']}, target->client {counts['out']}")


def user_agent(scope: dict) -> str:
    """The ``User-Agent`` header of an ASGI request, or ``""``."""
    return next((value.decode("latin-1") for key, value in scope["headers"] if key == b"user-agent"), "")
