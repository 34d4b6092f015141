"""Transcripts: what a real client asked the target and what the target answered, as the recorder saw it.

A transcript is how the suite *proves* which polling path a client used. Written by
:class:`~harness.clients.recorder.ReverseProxy` as ``artifacts/<feature>/<actor>.transcript.jsonl`` (one
:class:`Exchange` per line, no headers, so no credentials); read back here for the reports. Imports nothing of
the harness.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path


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
    """What the scenarios read from a recorder (the relay or the proxy), given its :meth:`transcript`."""

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
        (endpoint, ", ".join(f"{s}x{n}" if n > 1 else str(s) for s, n in sorted(statuses.items())), sum(statuses.values()))
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
