"""Transcripts: what a real client asked the target and what the target answered, as the recorder saw it.

A transcript is how the suite *proves* which polling path a client used. Written by the clients' relay
(:class:`~harness.clients.relay.RecordingRelay`) as ``artifacts/<feature>/<actor>.transcript.jsonl`` (one
:class:`Exchange` per line, no headers, so no credentials); read back here for the reports. Imports nothing of
the harness.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

#: How many bytes of whole successful JSON answers a recorder keeps beside its exchanges, at most.
MAX_KEPT_BYTES = 64 * 1024 * 1024


def api_relative(path: str, api_path: str) -> str:
    """A request's path as transcripts record it: below the API root (``/api/flows/`` -> ``/flows/``)."""
    return path[len(api_path) :] if path.startswith(api_path) else path


@dataclass
class Exchange:
    """One recorded request/response (or websocket session) in a transcript."""

    actor: str
    method: str
    path: str
    status: int
    started: float
    latency_ms: float
    request_summary: str = ""
    response_summary: str = ""
    websocket: bool = False
    subprotocol: str | None = None
    #: The client's ``User-Agent`` (Prefect's clients send ``prefect/X.Y.Z (API ...)``): which release spoke.
    user_agent: str = ""


class Recorded:
    """What every recorder (the relay, the proxy) is: a listener on the loopback interface in front of the target,
    started and stopped as a context manager, whose :meth:`transcript` the scenarios read."""

    port: int
    _api_path: str  # the target's API root path, kept below the recorder's own address

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._api_path}"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> socket.socket:
        """A socket bound to a free loopback port (now :attr:`port`), for the recorder's server to listen on.

        ``IPPROTO_TCP`` matters: asyncio sets TCP_NODELAY only on such sockets, and without it every keep-alive
        answer written in two parts (head and body) waits ~40 ms for a delayed ACK."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        return sock

    def transcript(self) -> list[Exchange]:
        raise NotImplementedError

    def requests_to(self, method: str, path_suffix: str) -> list[Exchange]:
        """Recorded exchanges whose method matches and whose path (below the API root) ends with ``path_suffix``."""
        return [e for e in self.transcript() if e.method == method and e.path.endswith(path_suffix)]

    def write_transcript(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            for exchange in self.transcript():
                out.write(json.dumps(asdict(exchange)) + "\n")


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def endpoint_of(path: str) -> str:
    """A path with ids replaced by ``{id}``, so a transcript can be condensed per endpoint."""
    return UUID.sub("{id}", path)


def condense(exchanges: list[Exchange]) -> list[tuple[str, str, int]]:
    """(method endpoint, statuses, count) per endpoint, in order of first use: a transcript at a glance."""
    rows: dict[str, dict[int, int]] = {}
    for exchange in exchanges:
        statuses = rows.setdefault(f"{exchange.method} {endpoint_of(exchange.path)}", {})
        statuses[exchange.status] = statuses.get(exchange.status, 0) + 1
    return [
        (
            endpoint,
            ", ".join(f"{s}x{n}" if n > 1 else str(s) for s, n in sorted(statuses.items())),
            sum(statuses.values()),
        )
        for endpoint, statuses in rows.items()
    ]


def summarize_body(body: bytes, limit: int = 300) -> str:
    """A short, single-line summary of a JSON (or other) body for transcripts and failure messages."""
    if not body:
        return ""
    try:
        text = json.dumps(json.loads(body), separators=(",", ":"))
    except ValueError:
        text = body[:limit].decode(errors="replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Transcript:
    feature: str
    actor: str
    path: Path
    exchanges: list[Exchange]

    @property
    def user_agents(self) -> list[str]:
        """The distinct ``User-Agent`` values the actor sent, in order of first use."""
        return list(dict.fromkeys(e.user_agent for e in self.exchanges if e.user_agent))


def transcripts(artifacts_dir: Path | None) -> list[Transcript]:
    if artifacts_dir is None or not artifacts_dir.exists():
        return []
    found = []
    for path in sorted(artifacts_dir.glob("*/*.transcript.jsonl")):
        exchanges = [Exchange(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        found.append(Transcript(path.parent.name, path.name.removesuffix(".transcript.jsonl"), path, exchanges))
    return found
