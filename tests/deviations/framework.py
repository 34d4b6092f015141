"""The proxy's hooks (:class:`Deviation`), deviations together, and the generic ways a server goes wrong: rewriting
answers, requests, runs, polls and objects, refusing a route, accepting a field it ignores."""

from __future__ import annotations

import re
from typing import Any, Callable

from harness.checks.timestamps import DATE_LIKE
from tests.deviating_proxy import ProxyRequest, ProxyResponse

Rewrite = Callable[[str], str]


class Deviation:
    """Changes the traffic between client and target; the base class changes nothing.

    ``on_request`` may edit the request in place or return a response to answer without asking the target;
    ``on_response`` returns the response to send back (edited or not); ``on_websocket`` may refuse a socket
    by returning a close code (the handshake is answered 403, as Starlette answers) or an HTTP status (the handshake
    is answered with it: 404 as a server without the route). ``latency`` seconds are added before each HTTP request
    is answered (a slow target), without blocking other requests. ``upstream`` is the API root of the server the
    proxy fronts, set when the proxy starts (:meth:`bind`), for a deviation that asks it something itself.
    """

    latency: float = 0.0
    upstream: str = ""

    def bind(self, upstream: str) -> None:
        self.upstream = upstream

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        return response

    def on_websocket(self, path: str) -> int | None:
        return None


class Together(Deviation):
    """Several deviations at once, each on its own traffic: one suite run shows each of their checks failing."""

    def __init__(self, *parts: Deviation) -> None:
        self.parts = parts

    def bind(self, upstream: str) -> None:
        for part in self.parts:
            part.bind(upstream)

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        for part in self.parts:
            answer = part.on_request(request)
            if answer is not None:
                return answer
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        for part in self.parts:
            response = part.on_response(request, response)
        return response

    def on_websocket(self, path: str) -> int | None:
        return next((code for code in (part.on_websocket(path) for part in self.parts) if code is not None), None)


def map_strings(document: Any, fn: Callable[[str, str], str], key: str = "") -> Any:
    """Apply ``fn(key, value)`` to every string value in a JSON document."""
    if isinstance(document, dict):
        return {k: map_strings(v, fn, k) for k, v in document.items()}
    if isinstance(document, list):
        return [map_strings(v, fn, key) for v in document]
    if isinstance(document, str):
        return fn(key, document)
    return document


def only_timestamps(rewrite: Rewrite) -> Callable[[str, str], str]:
    return lambda key, value: rewrite(value) if DATE_LIKE.match(value) else value


class RewritesResponses(Deviation):
    """Rewrites every timestamp string in JSON responses (optionally only for some paths or keys)."""

    def __init__(self, rewrite: Rewrite, *, path: str = "", keys: frozenset[str] | None = None) -> None:
        self.rewrite, self.path, self.keys = rewrite, re.compile(path), keys

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if not self.path.search(request.path) or "json" not in dict(response.headers).get("content-type", ""):
            return response

        def fn(key: str, value: str) -> str:
            if self.keys is not None and key not in self.keys:
                return value
            return self.rewrite(value) if DATE_LIKE.match(value) else value

        response.set_json(map_strings(response.json(), fn))
        return response


class RewritesRequests(Deviation):
    """Rewrites timestamp strings (or every string under ``keys``) in JSON request bodies."""

    def __init__(self, rewrite: Rewrite, *, keys: frozenset[str] | None = None) -> None:
        self.rewrite, self.keys = rewrite, keys

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.body and request.method in ("POST", "PATCH", "PUT"):
            if self.keys is None:
                fn = only_timestamps(self.rewrite)
            else:
                fn = lambda key, value: self.rewrite(value) if key in self.keys else value  # noqa: E731
            request.set_json(map_strings(request.json(), fn))
        return None


class RejectsRequests(Deviation):
    """Answers ``status`` to any request whose body holds a string matching ``pattern`` (a parser that chokes)."""

    def __init__(self, pattern: str, status: int = 422, detail: str = "unparsable datetime") -> None:
        self.pattern, self.status, self.detail = re.compile(pattern), status, detail

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.body and request.method in ("POST", "PATCH") and self._matches(request.json()):
            return ProxyResponse.of_json(self.status, {"detail": self.detail})
        return None

    def _matches(self, document: Any) -> bool:
        found = False

        def fn(key: str, value: str) -> str:
            nonlocal found
            found = found or bool(self.pattern.search(value))
            return value

        map_strings(document, fn)
        return found


class AcceptsWithout(Deviation):
    """Answers like the reference to requests matching ``method`` and the ``path`` regex, but drops ``fields`` from
    their JSON body first: a server that accepts a setting and never stores it."""

    def __init__(self, method: str, path: str, *fields: str) -> None:
        self.method, self.path, self.fields = method, re.compile(path), fields

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == self.method and self.path.search(request.path) and request.body:
            request.set_json({k: v for k, v in (request.json() or {}).items() if k not in self.fields})
        return None


class IgnoresDeletes(Deviation):
    """Answers 204 to DELETEs matching the ``path`` regex without deleting anything."""

    def __init__(self, path: str) -> None:
        self.path = re.compile(path)

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "DELETE" and self.path.search(request.path):
            return ProxyResponse(204, [], b"")
        return None


class Refuses(Deviation):
    """Answers ``status`` to requests matching ``method`` and the ``path`` regex, and closes matching websockets:
    a server that does not implement an endpoint."""

    def __init__(self, method: str, path: str, status: int = 404, *, websocket_path: str = "") -> None:
        self.method, self.path, self.status = method, re.compile(path), status
        self.websocket_path = re.compile(websocket_path) if websocket_path else None

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == self.method and self.path.search(request.path):
            return ProxyResponse.of_json(self.status, {"detail": "Not Found"})
        return None

    def on_websocket(self, path: str) -> int | None:
        return 1008 if self.websocket_path and self.websocket_path.search(path) else None


class RefusesWebsockets(Deviation):
    """Answers the handshake of websockets whose path matches ``path`` with the HTTP ``status`` (404: a server that
    has no such route, as the notes of the Zig port describe for ``/events/in`` and ``/events/out``)."""

    def __init__(self, path: str, status: int = 404) -> None:
        self.path, self.status = re.compile(path), status

    def on_websocket(self, path: str) -> int | None:
        return self.status if self.path.search(path) else None


class RewritesRuns(Deviation):
    """Applies ``fn`` to every flow run in responses of ``GET /flow_runs/{id}`` and ``POST /flow_runs/filter``."""

    def __init__(self, fn: Callable[[dict], dict | list[dict]]) -> None:
        self.fn = fn

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if response.status != 200 or not re.search(r"/flow_runs/([0-9a-f-]{36}|filter)$", request.path):
            return response
        document = response.json()
        if isinstance(document, list):
            runs: list[dict] = []
            for run in document:
                result = self.fn(run)
                runs.extend(result if isinstance(result, list) else [result])
            response.set_json(runs)
        elif isinstance(document, dict):
            response.set_json(self.fn(document))
        return response


class RewritesJson(Deviation):
    """Applies ``fn`` to the JSON answer of requests matching ``method`` and the ``path`` regex."""

    def __init__(self, method: str, path: str, fn: Callable[[Any], Any]) -> None:
        self.method, self.path, self.fn = method, re.compile(path), fn

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == self.method and self.path.search(request.path) and response.status == 200:
            response.set_json(self.fn(response.json()))
        return response


class RewritesPolls(Deviation):
    """Post-processes the answer of either polling endpoint: ``fn(request_body, items) -> items``.

    Items are flow runs (deployments endpoint) or ``{work_pool_id, work_queue_id, flow_run}`` (work pools).
    """

    def __init__(self, fn: Callable[[dict, list], list], *, pools: bool = False, deployments: bool = True) -> None:
        self.fn, self.pools, self.deployments = fn, pools, deployments

    def _applies(self, path: str) -> bool:
        return (self.deployments and path.endswith("/deployments/get_scheduled_flow_runs")) or (
            self.pools and bool(re.search(r"/work_pools/[^/]+/get_scheduled_flow_runs$", path))
        )

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == "POST" and self._applies(request.path) and response.status == 200:
            response.set_json(self.fn(request.json() or {}, response.json()))
        return response


def run_of(item: dict) -> dict:
    return item.get("flow_run", item)


def force_through(request: ProxyRequest, state_type: str) -> None:
    """Marks a client's unforced proposal of ``state_type`` (``POST /flow_runs/{id}/set_state``) as forced, so the
    reference accepts it past every orchestration rule: a server without the rule that would have answered it."""
    if request.method == "POST" and re.search(r"/flow_runs/[0-9a-f-]{36}/set_state$", request.path):
        body = request.json() or {}
        if (body.get("state") or {}).get("type") == state_type and not body.get("force"):
            request.set_json({**body, "force": True})


def map_objects(document: Any, fn: Callable[[dict], dict]) -> Any:
    """Apply ``fn`` to every JSON object in a document, innermost first."""
    if isinstance(document, dict):
        return fn({k: map_objects(v, fn) for k, v in document.items()})
    if isinstance(document, list):
        return [map_objects(v, fn) for v in document]
    return document


class RewritesObjects(Deviation):
    """Applies ``fn`` to every JSON object of every successful JSON answer."""

    def __init__(self, fn: Callable[[dict], dict]) -> None:
        self.fn = fn

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if response.status not in (200, 201) or "json" not in dict(response.headers).get("content-type", ""):
            return response
        response.set_json(map_objects(response.json(), self.fn))
        return response


class RewritesScheduleEntries(Deviation):
    """Passes every deployment schedule a client sends (``{"schedule": ..., "active": ..., "slug": ...}``, creating
    or updating a deployment, or adding its schedules) through ``transform`` before the reference behind the proxy
    sees it: a server that reads them its own way."""

    PATH = re.compile(r"/deployments/([0-9a-f-]{36}(/schedules)?)?$")

    def __init__(self, transform: Callable[[dict], dict]) -> None:
        self.transform = transform

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method not in ("POST", "PATCH") or not self.PATH.search(request.path) or not request.body:
            return None
        try:
            body = request.json()
        except ValueError:
            return None
        entries = body if isinstance(body, list) else body.get("schedules") if isinstance(body, dict) else None
        changed = False
        for index, entry in enumerate(entries or []):
            if isinstance(entry, dict) and isinstance(entry.get("schedule"), dict):
                rewritten = self.transform(dict(entry))
                changed |= rewritten != entry
                entries[index] = rewritten
        if changed:
            request.set_json(body)
        return None


class RewritesSchedules(RewritesScheduleEntries):
    """``transform`` applied to the ``schedule`` of each deployment schedule a client sends."""

    def __init__(self, transform: Callable[[dict], dict]) -> None:
        super().__init__(lambda entry: {**entry, "schedule": transform(dict(entry["schedule"]))})
