"""The probe of the API coverage map: which routes of Prefect's OpenAPI document the target implements.

A port's author reads their to-do list from the map (as APISnoop shows Kubernetes' API coverage). Each route is
probed with a request it must refuse or can only read with, so nothing is ever created or changed: a body that is not
JSON where the route takes one (Prefect's own server refuses it before any endpoint runs: FastAPI's request
validation, 422), a ``GET`` without its required query parameter, a ``GET`` of an id or name no object has (a 404
that names the object), or a plain ``GET`` where the route takes no input. The answer says whether the route
exists: a refusal or an answer means it does; a route-level 404 (``{"detail": "Not Found"}``, the one rule of
:func:`~harness.errors.means_not_implemented`), 405 or 501 means it does not. A route no such request exists
for (a ``DELETE``, a ``POST`` without a body such as ``.../pause_deployment``) is not probed: never a request that
could act. The map itself, and what the real clients called, are :mod:`harness.reporting.coverage`'s.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from harness.errors import means_not_implemented
from harness.reporting.coverage import Coverage, Route
from harness.target.api import excerpt
from harness.target.credentials import api_headers
from harness.target.tls import tls_context

METHODS = ("get", "post", "put", "patch", "delete")
#: Sent where a route takes a JSON body: no server can read anything from it.
UNREADABLE_BODY = b'{"prefect-conformance": "this body is cut short'
#: No object of any target has it (version 4, its random bits spelling "prefect-conformance").
UNUSED_UUID = "00000000-0000-4000-8000-0000c0ffee00"


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
    return schema.get("format") == "uuid" or any(
        s.get("format") == "uuid" and len(schema.get("anyOf", [])) == 1 for s in schema.get("anyOf", [])
    )


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
            answer = http.request(
                route.method,
                path,
                content=body,
                headers={"Content-Type": "application/json"} if body is not None else None,
            )
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
    with (
        httpx.Client(
            base_url=api_url.rstrip("/"), timeout=timeout, headers=api_headers(), verify=tls_context(), limits=limits
        ) as http,
        ThreadPoolExecutor(workers) as pool,
    ):
        list(pool.map(lambda pair: one(http, *pair), pairs))
    return Coverage([route for route, _ in pairs], failures[0] if failures else "")
