"""The API coverage map as data: each route of Prefect's OpenAPI document, whether the target implements it (the
probe of :mod:`harness.checks.coverage` says), and how often the run's real clients called it, from their transcripts
(:mod:`harness.clients.transcript`): each request matched to the document's route template, with the statuses the
target answered.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.clients.transcript import transcripts


@dataclass
class Route:
    method: str
    route: str
    #: The document's first tag for the route ("Flows", "Work Pools"), or "Other".
    tag: str
    #: What the probe sent, or why no request was sent ("" until probed).
    probe: str = ""
    #: present, missing, server error (a 5xx proves nothing), or not probed
    verdict: str = "not probed"
    status: int = 0
    answer: str = ""
    #: How often the real clients of the run called it, and the statuses the target answered them.
    used: int = 0
    used_statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class Coverage:
    routes: list[Route]
    error: str = ""  # why the target could not be probed, if it could not

    @property
    def summary(self) -> dict[str, int]:
        used = [r for r in self.routes if r.used]
        return {
            "routes": len(self.routes),
            "present": sum(r.verdict == "present" for r in self.routes),
            "missing": sum(r.verdict == "missing" for r in self.routes),
            "server_error": sum(r.verdict == "server error" for r in self.routes),
            "not_probed": sum(r.verdict == "not probed" for r in self.routes),
            "used_by_clients": len(used),
            "used_but_missing": sum(r.verdict == "missing" for r in used),
        }

    @property
    def line(self) -> str:
        s = self.summary
        if self.error:
            return f"the target's routes were not probed: {self.error}"
        used = (
            "no real client's traffic was recorded"
            if not s["used_by_clients"]
            else f"the real clients used {s['used_by_clients']}, "
            + ("all present" if not s["used_but_missing"] else f"{s['used_but_missing']} of them missing")
        )
        errors = f", {s['server_error']} answered a server error" if s["server_error"] else ""
        return (
            f"implements {s['present']} of the {s['present'] + s['missing'] + s['server_error']} routes probed"
            f"{errors} ({s['routes']} in Prefect's document, {s['not_probed']} not probed: no request they must "
            "refuse); " + used
        )

    def by_tag(self) -> list[tuple[str, dict[str, int]]]:
        tags: dict[str, Counter[str]] = {}
        for r in self.routes:
            tags.setdefault(r.tag, Counter())[r.verdict] += 1
        return sorted((tag, dict(counts)) for tag, counts in tags.items())

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "summary": self.summary,
            "error": self.error,
            "routes": [asdict(r) for r in self.routes],
        }


def template_pattern(route: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(route)) + "/?$")


def add_client_usage(coverage: Coverage, artifacts_dir: Path | None) -> None:
    """Count the real clients' requests of the run (their transcripts) per route, with the statuses answered."""
    # Literal routes before templated ones: /flows/filter is not /flows/{id}.
    ordered = sorted(coverage.routes, key=lambda r: (r.route.count("{"), -len(r.route)))
    patterns = [(r, template_pattern(r.route)) for r in ordered]
    for transcript in transcripts(artifacts_dir):
        for exchange in transcript.exchanges:
            method = "GET" if exchange.websocket else exchange.method
            path = exchange.path.split("?")[0]
            for route, pattern in patterns:
                if route.method == method and pattern.match(path):
                    route.used += 1
                    key = str(exchange.status)
                    route.used_statuses[key] = route.used_statuses.get(key, 0) + 1
                    break
