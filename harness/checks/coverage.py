"""The API coverage map: which routes of Prefect's OpenAPI document the target implements, and which of them the
real clients of the run called.

A port's author reads their to-do list from it (as APISnoop shows Kubernetes' API coverage). Each route is probed
with a request it must refuse or can only read with, so nothing is ever created or changed: a body that is not
JSON where the route takes one (Prefect's own server refuses it before any endpoint runs: FastAPI's request
validation, 422), a ``GET`` without its required query parameter, a ``GET`` of an id or name no object has (a 404
that names the object), or a plain ``GET`` where the route takes no input. The answer says whether the route
exists: a refusal or an answer means it does; a route-level 404 (``{"detail": "Not Found"}``, the one rule of
:func:`~harness.target.errors.means_not_implemented`), 405 or 501 means it does not. A route no such request exists
for (a ``DELETE``, a ``POST`` without a body such as ``.../pause_deployment``) is not probed: never a request that
could act.

What the real clients called comes from their transcripts (:mod:`harness.clients.transcript`): each request is
matched to the document's route template, with the statuses the target answered.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness.clients.transcript import transcripts
from harness.target.api import excerpt
from harness.target.credentials import api_headers
from harness.target.errors import means_not_implemented
from harness.target.tls import tls_context

METHODS = ("get", "post", "put", "patch", "delete")
#: Sent where a route takes a JSON body: no server can read anything from it.
UNREADABLE_BODY = b'{"prefect-conformance": "this body is cut short'
#: No object of any target has it (version 4, its random bits spelling "prefect-conformance").
UNUSED_UUID = "00000000-0000-4000-8000-0000c0ffee00"


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
        return {"routes": len(self.routes), "present": sum(r.verdict == "present" for r in self.routes),
                "missing": sum(r.verdict == "missing" for r in self.routes),
                "server_error": sum(r.verdict == "server error" for r in self.routes),
                "not_probed": sum(r.verdict == "not probed" for r in self.routes),
                "used_by_clients": len(used), "used_but_missing": sum(r.verdict == "missing" for r in used)}

    @property
    def line(self) -> str:
        s = self.summary
        if self.error:
            return f"the target's routes were not probed: {self.error}"
        used = ("no real client's traffic was recorded" if not s["used_by_clients"] else
                f"the real clients used {s['used_by_clients']}, "
                + ("all present" if not s["used_but_missing"] else f"{s['used_but_missing']} of them missing"))
        errors = f", {s['server_error']} answered a server error" if s["server_error"] else ""
        return (f"implements {s['present']} of the {s['present'] + s['missing'] + s['server_error']} routes probed"
                f"{errors} ({s['routes']} in Prefect's document, {s['not_probed']} not probed: no request they must "
                "refuse); " + used)

    def by_tag(self) -> list[tuple[str, dict[str, int]]]:
        tags: dict[str, Counter[str]] = {}
        for r in self.routes:
            tags.setdefault(r.tag, Counter())[r.verdict] += 1
        return sorted((tag, dict(counts)) for tag, counts in tags.items())

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "summary": self.summary, "error": self.error,
                "routes": [asdict(r) for r in self.routes]}


def document_routes(document: dict[str, Any]) -> list[tuple[Route, dict[str, Any]]]:
    """Every operation of the document, with its OpenAPI operation object."""
    found = []
    for route, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                operation = item[method]
                found.append((Route(method.upper(), route, (operation.get("tags") or ["Other"])[0]), operation))
    return found


def probe_request(route: Route, operation: dict[str, Any], name: str) -> tuple[str, bytes | None, str] | None:
    """(path, body, what it is) of a request ``route`` must refuse or can only read with, or None where no such
    request exists."""
    parameters = [p for p in operation.get("parameters", []) if p.get("in") in ("path", "query")]
    in_path = [p for p in parameters if p["in"] == "path"]
    # An id that no object has, but a UUID: Prefect's routes match only UUIDs there ({id:uuid}), so anything else
    # would be a route-level 404 on Prefect's own server too.
    values = {p["name"]: UNUSED_UUID if is_uuid(p.get("schema", {})) else name for p in in_path}
    path = re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: values.get(m.group(1), name), route.route)
    if "requestBody" in operation:
        return path, UNREADABLE_BODY, "a body that is not JSON"
    if route.method != "GET":
        return None  # nothing to refuse: a DELETE or a POST without a body could act
    required = [p for p in parameters if p["in"] == "query" and p.get("required")]
    if required:
        return path, None, f"without its required {required[0]['name']}"
    if not in_path:
        return path, None, "as it is (it takes no input)"
    return path, None, "an id or a name no object has (a 404 that names the object)"


def is_uuid(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "uuid" or any(s.get("format") == "uuid" and len(schema.get("anyOf", [])) == 1
                                                 for s in schema.get("anyOf", []))


def probe(api_url: str, document: dict[str, Any], name: str, timeout: float = 10.0, workers: int = 8) -> Coverage:
    """Every route of ``document``, probed on the target at ``api_url`` (``name``: the run's prefixed name for path
    parameters that are names, which no object of the target has), ``workers`` requests at a time."""
    pairs = document_routes(document)
    failures: list[str] = []

    def one(http: httpx.Client, route: Route, operation: dict[str, Any]) -> None:
        request = probe_request(route, operation, name)
        if request is None:
            route.probe = "no request it must refuse (it could act on data)"
            return
        path, body, what = request
        route.probe = f"{route.method} {path} ({what})"
        try:
            answer = http.request(route.method, path, content=body,
                                  headers={"Content-Type": "application/json"} if body is not None else None)
        except httpx.HTTPError as exc:
            failures.append(f"{route.method} {path} failed: {type(exc).__name__}: {exc}")
            return
        route.status, route.answer = answer.status_code, excerpt(answer.text, 160)
        if means_not_implemented(answer.status_code, answer.text):
            route.verdict = "missing"
        elif answer.status_code >= 500:  # a server error proves nothing either way
            route.verdict = "server error"
        else:
            route.verdict = "present"

    limits = httpx.Limits(max_connections=workers)
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout, headers=api_headers(), verify=tls_context(),
                      limits=limits) as http, ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda pair: one(http, *pair), pairs))
    return Coverage([route for route, _ in pairs], failures[0] if failures else "")


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


def write_coverage(path: Path, coverage: Coverage) -> None:
    path.write_text(json.dumps(coverage.as_dict(), indent=2) + "\n")
