"""Deliberately non-conforming targets: the reference behind a proxy that gets one thing wrong.

Each deviation models a mistake a real server author could make (storing milliseconds, dropping the input
offset, comparing timestamp strings, ...). The project's own tests run the conformance checks against them to
show that every check can fail, and fails with a message that names the problem.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections import Counter
from typing import Any, Callable

from harness.checks.timestamps import DATE_LIKE, RFC3339, parse_instant
from tests.deviating_proxy import ProxyRequest, ProxyResponse

Rewrite = Callable[[str], str]


class Deviation:
    """Changes the traffic between client and target; the base class changes nothing.

    ``on_request`` may edit the request in place or return a response to answer without asking the target;
    ``on_response`` returns the response to send back (edited or not); ``on_websocket`` may refuse a socket
    by returning a close code (the handshake is answered 403, as Starlette answers) or an HTTP status (the handshake
    is answered with it: 404 as a server without the route). ``latency`` seconds are added before each HTTP request
    is answered (a slow target), without blocking other requests.
    """

    latency: float = 0.0

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


class RewriteResponses(Deviation):
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


class UnusualTimestamps(Deviation):
    """Readable but non-conforming timestamps everywhere: flow-run routes (and so both polling endpoints) answer
    naive ones, as the seed notes' port did; every other route answers them with a space instead of 'T'."""

    def __init__(self) -> None:
        self.naive = RewriteResponses(drop_offset, path="flow_run")
        self.spaced = RewriteResponses(space_separator, path=r"^(?!.*flow_run)")

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        return self.spaced.on_response(request, self.naive.on_response(request, response))


class RewriteRequests(Deviation):
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


class RejectRequests(Deviation):
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


class IgnorePause(Deviation):
    """Accepts pausing a work pool or queue (204) without pausing it: a server whose polls ignore ``is_paused``."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "PATCH" and "/work_pools/" in request.path and request.body:
            if (request.json() or {}).get("is_paused") is True:
                return ProxyResponse(204, [], b"")
        return None


class AcceptWithout(Deviation):
    """Answers like the reference to requests matching ``method`` and the ``path`` regex, but drops ``fields`` from
    their JSON body first: a server that accepts a setting and never stores it."""

    def __init__(self, method: str, path: str, *fields: str) -> None:
        self.method, self.path, self.fields = method, re.compile(path), fields

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == self.method and self.path.search(request.path) and request.body:
            request.set_json({k: v for k, v in (request.json() or {}).items() if k not in self.fields})
        return None


class IgnoreDeletes(Deviation):
    """Answers 204 to DELETEs matching the ``path`` regex without deleting anything."""

    def __init__(self, path: str) -> None:
        self.path = re.compile(path)

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "DELETE" and self.path.search(request.path):
            return ProxyResponse(204, [], b"")
        return None


class StringCompareFilters(Deviation):
    """Emulates a server that filters ``expected_start_time`` by comparing the stored string with the bound."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.path.endswith("/flow_runs/filter") and request.body:
            body = request.json()
            bounds = (body.get("flow_runs") or {}).pop("expected_start_time", None)
            request.set_json(body)
            request.bounds = bounds  # type: ignore[attr-defined]
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        bounds = getattr(request, "bounds", None)
        if bounds and response.status == 200:
            kept = [
                run
                for run in response.json()
                if (bounds.get("after_") is None or run["expected_start_time"] >= bounds["after_"])
                and (bounds.get("before_") is None or run["expected_start_time"] <= bounds["before_"])
            ]
            response.set_json(kept)
        return response


# --- rewrites of single timestamp strings -----------------------------------------------------------------------


def _instant(value: str) -> dt.datetime | None:
    try:
        return parse_instant(value)
    except ValueError:
        return None


def drop_offset(value: str) -> str:
    """'2026-11-26T10:00:00Z' -> '2026-11-26T10:00:00' (naive output)."""
    return re.sub(r"(Z|[+-]\d{2}:?\d{2})$", "", value) if RFC3339.match(value) else value


def space_separator(value: str) -> str:
    return value.replace("T", " ", 1)


def to_offset(minutes: int) -> Rewrite:
    """The same instant, written with a non-UTC offset (so only the format is wrong)."""
    tz = dt.timezone(dt.timedelta(minutes=minutes))

    def rewrite(value: str) -> str:
        instant = _instant(value)
        return instant.astimezone(tz).isoformat() if instant else value

    return rewrite


def truncate_to_millis(value: str) -> str:
    return re.sub(r"\.(\d{3})\d*", r".\1", value) if RFC3339.match(value) else value


def drop_fraction(value: str) -> str:
    return re.sub(r"\.\d+", "", value) if RFC3339.match(value) else value


def shifted(seconds: float) -> Rewrite:
    """The instant ``seconds`` later (earlier when negative), written as Prefect writes it."""

    def rewrite(value: str) -> str:
        instant = _instant(value)
        if instant is None:
            return value
        return (instant + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    return rewrite


#: The fields Prefect's server sets from its own clock (a log's ``timestamp`` is the client's, a state's the server's).
SERVER_SET_FIELDS = frozenset(
    {"created", "updated", "timestamp", "start_time", "end_time", "last_polled", "last_heartbeat_time"}
)


class WrongClock(RewriteResponses):
    """A server whose clock is ``seconds`` ahead: every time it sets itself, and its ``Date`` header, are that far
    off; what clients sent comes back as they sent it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(shifted(seconds), keys=SERVER_SET_FIELDS)
        self.seconds = seconds

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        import email.utils

        response.headers = [
            (
                k,
                email.utils.format_datetime(
                    dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.seconds), usegmt=True
                )
                if k.lower() == "date"
                else v,
            )
            for k, v in response.headers
        ]
        return super().on_response(request, response)


def offset_ignored(value: str) -> str:
    """Input '10:00+05:30' read as '10:00Z': the server drops the offset instead of converting."""
    return re.sub(r"([+-]\d{2}:?\d{2})$", "Z", value) if not re.search(r"[+-]00:?00$", value) else value


def naive_as_local(value: str) -> str:
    """A naive input read in the server's local zone (UTC-08:00) instead of UTC."""
    return value + "-08:00" if re.match(r"^\d{4}-\d{2}-\d{2}[T ][\d:.]+$", value) else value


def garbage_to_now(value: str) -> str:
    """A server that swallows unparsable input and stores the current time instead."""
    if _instant(value.replace(" ", "T", 1)) is None and not re.match(r"^\d{4}-\d{2}-\d{2}[T ][\d:.]+$", value):
        return dt.datetime.now(dt.timezone.utc).isoformat()
    return value


# --- deviations of the polling and scheduling paths -----------------------------------------------------------


class Refuse(Deviation):
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


class RefuseWebsockets(Deviation):
    """Answers the handshake of websockets whose path matches ``path`` with the HTTP ``status`` (404: a server that
    has no such route, as the notes of the Zig port describe for ``/events/in`` and ``/events/out``)."""

    def __init__(self, path: str, status: int = 404) -> None:
        self.path, self.status = re.compile(path), status

    def on_websocket(self, path: str) -> int | None:
        return self.status if self.path.search(path) else None


class EmptyPolls(Deviation):
    """Both polling endpoints answer 200 with no runs: the query is implemented but never matches anything
    (for instance because it compares timestamp strings)."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/get_scheduled_flow_runs"):
            return ProxyResponse.of_json(200, [])
        return None


class RewriteRuns(Deviation):
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


def horizon_of(minutes: int) -> Callable[[dict], dict | list[dict]]:
    """For :class:`RewriteRuns`: a scheduler that keeps runs only ``minutes`` ahead (auto-scheduled runs due later
    are not there)."""

    def fn(run: dict) -> dict | list[dict]:
        due = run.get("expected_start_time")
        ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
        return [] if run.get("auto_scheduled") and due and parse_instant(due) > ahead else run

    return fn


def first_pass_only() -> Callable[[dict], dict | list[dict]]:
    """For :class:`RewriteRuns`: a scheduler that expands a deployment once and never tops its series up (the
    auto-scheduled runs created more than 2 s after a deployment's first are not there)."""
    first: dict[str, dt.datetime] = {}

    def fn(run: dict) -> dict | list[dict]:
        if not run.get("auto_scheduled") or not run.get("created"):
            return run
        created = parse_instant(run["created"])
        deployment = run.get("deployment_id") or ""
        first[deployment] = min(first.get(deployment, created), created)
        return [] if created > first[deployment] + dt.timedelta(seconds=2) else run

    return fn


class RewriteJson(Deviation):
    """Applies ``fn`` to the JSON answer of requests matching ``method`` and the ``path`` regex."""

    def __init__(self, method: str, path: str, fn: Callable[[Any], Any]) -> None:
        self.method, self.path, self.fn = method, re.compile(path), fn

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == self.method and self.path.search(request.path) and response.status == 200:
            response.set_json(self.fn(response.json()))
        return response


# --- deviations of the scheduling queries ---------------------------------------------------------------------


def _nsst(run: dict) -> dt.datetime:
    value = run.get("next_scheduled_start_time")
    return parse_instant(value) if value else dt.datetime.min.replace(tzinfo=dt.timezone.utc)


class RewritePoll(Deviation):
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


class HandsOutOnce(RewritePoll):
    """Polls never hand out a run twice: a server that marks runs as claimed and never clears the mark, so a run
    moved back to SCHEDULED is lost."""

    def __init__(self) -> None:
        self.handed_out: set[str] = set()
        super().__init__(self._once, pools=True, deployments=True)

    def _once(self, body: dict, items: list) -> list:
        fresh = [item for item in items if run_of(item)["id"] not in self.handed_out]
        self.handed_out.update(run_of(item)["id"] for item in fresh)
        return fresh


class RetriesByRescheduling(Deviation):
    """Answers a flow engine's unforced FAILED by moving the run to AwaitingRetry as a plain new schedule, without
    marking it as retried in process: a server whose polls then hand the run to a worker, which starts it a
    second time while the flow's own process retries it (Prefect issue #15458)."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and re.search(r"/flow_runs/[0-9a-f-]{36}/set_state$", request.path):
            body = request.json() or {}
            if (body.get("state") or {}).get("type") == "FAILED" and not body.get("force"):
                now = dt.datetime.now(dt.timezone.utc).isoformat()
                request.set_json(
                    {
                        "force": True,
                        "state": {
                            "type": "SCHEDULED",
                            "name": "AwaitingRetry",
                            "state_details": {"scheduled_time": now},
                        },
                    }
                )
        return None


class IgnoresCancellation(Deviation):
    """Answers a proposal of CANCELLING with ACCEPT and stores nothing: a server without cancellation, whose runs
    go on running (and whose scheduled runs stay scheduled) when a user cancels them."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and re.search(r"/flow_runs/[0-9a-f-]{36}/set_state$", request.path):
            state = (request.json() or {}).get("state") or {}
            if state.get("type") == "CANCELLING":
                return ProxyResponse.of_json(201, {"status": "ACCEPT", "details": {}, "state": state})
        return None


class RefusesCrashed(Deviation):
    """Answers 422 to a proposal of CRASHED: a server that does not know the state, so a run whose process died is
    left RUNNING."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and re.search(r"/flow_runs/[0-9a-f-]{36}/set_state$", request.path):
            if ((request.json() or {}).get("state") or {}).get("type") == "CRASHED":
                return ProxyResponse.of_json(422, {"detail": "unknown state type CRASHED"})
        return None


class RefusesResume(Deviation):
    """Answers ``POST /flow_runs/{id}/resume`` with an ABORT and changes nothing: a server without resumes, whose
    paused and suspended runs stay paused."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and re.search(r"/flow_runs/[0-9a-f-]{36}/resume$", request.path):
            return ProxyResponse.of_json(
                200,
                {
                    "status": "ABORT",
                    "state": None,
                    "details": {"type": "abort_details", "reason": "resuming is not supported"},
                },
            )
        return None


class LacksLifecycleServices(Deviation):
    """A server without Prefect's foreman and pause-expirations services (the notes of the Zig port list both as
    missing): every worker it lists is ONLINE and every pool READY however long ago they were heard from, and a run
    whose pause expired stays PAUSED (the reference's FAILED is shown as the Suspended state it replaced)."""

    WORKERS = re.compile(r"/work_pools/[^/]+/workers/filter$")
    POOL = re.compile(r"/work_pools/[^/]+$")
    RUN = re.compile(r"/flow_runs/([0-9a-f-]{36}|filter)$")

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if response.status != 200:
            return response
        if request.method == "POST" and self.WORKERS.search(request.path):
            response.set_json([{**w, "status": "ONLINE"} for w in response.json()])
        elif request.method == "GET" and self.POOL.search(request.path):
            response.set_json({**response.json(), "status": "READY"})
        elif self.RUN.search(request.path):
            document = response.json()
            runs = document if isinstance(document, list) else [document]
            for run in runs:
                state = run.get("state") or {} if isinstance(run, dict) else {}
                if state.get("type") == "FAILED" and "paused and never resumed" in (state.get("message") or ""):
                    run["state"] = {**state, "type": "PAUSED", "name": "Suspended"}
            response.set_json(document)
        return response


def force_through(request: ProxyRequest, state_type: str) -> None:
    """Marks a client's unforced proposal of ``state_type`` (``POST /flow_runs/{id}/set_state``) as forced, so the
    reference accepts it past every orchestration rule: a server without the rule that would have answered it."""
    if request.method == "POST" and re.search(r"/flow_runs/[0-9a-f-]{36}/set_state$", request.path):
        body = request.json() or {}
        if (body.get("state") or {}).get("type") == state_type and not body.get("force"):
            request.set_json({**body, "force": True})


class FailuresAreFinal(Deviation):
    """Accepts a flow engine's unforced FAILED as it is (forcing it through): a server without Prefect's retry rule,
    where a flow with retries fails on its first failure."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        force_through(request, "FAILED")
        return None


#: The creation of a concurrency limit, global (v2) or a tag's (v1), and the key its size is sent in.
LIMIT_CREATIONS = (
    (re.compile(r"/v2/concurrency_limits/$"), "limit"),
    (re.compile(r"(?<!/v2)/concurrency_limits/$"), "concurrency_limit"),
)


def limit_size_key(request: ProxyRequest) -> str | None:
    if request.method == "POST":
        for path, key in LIMIT_CREATIONS:
            if path.search(request.path):
                return key
    return None


class IgnoresLimits(Deviation):
    """Creates a concurrency limit (global, or a tag's) with a hundred slots whatever it is asked for, and answers
    as if it had made the one asked for: a server whose limits limit nothing."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if (key := limit_size_key(request)) and request.body:
            request.set_json({**(request.json() or {}), key: 100})
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if (key := limit_size_key(request)) and response.status in (200, 201):
            response.set_json({**response.json(), key: 1})
        return response


class NoPendingGuard(RewritePoll):
    """A server without Prefect's guard on PENDING: it accepts every PENDING proposal (forcing it through), so a
    second worker that proposes PENDING for a run another worker took gets it too; and, as a server with a lagging
    claim would, its pool polls hand each run they have handed out once more, on every poll, until a second PENDING
    has been proposed for it. (Handed out only once, a run could reach only workers whose slots were all taken,
    which skip it, and a loaded run of the suite then saw no run twice.)"""

    def __init__(self) -> None:
        self.handed: dict[str, dict] = {}
        self.pendings: Counter[str] = Counter()
        super().__init__(self._again, pools=True, deployments=False)

    def _again(self, body: dict, items: list) -> list:
        fresh = {run_of(item)["id"] for item in items}
        extra = [item for run_id, item in self.handed.items() if run_id not in fresh and self.pendings[run_id] < 2]
        for item in items:
            self.handed.setdefault(run_of(item)["id"], item)
        return items + extra

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if match := re.search(r"/flow_runs/([0-9a-f-]{36})/set_state$", request.path):
            if request.method == "POST" and ((request.json() or {}).get("state") or {}).get("type") == "PENDING":
                self.pendings[match.group(1)] += 1
        force_through(request, "PENDING")
        return None


#: The reads of one pool, one of its queues, or one deployment: (kind, name or id).
STATUS_READS = (
    ("pool", re.compile(r"/work_pools/([^/]+)$")),
    ("queue", re.compile(r"/work_pools/[^/]+/queues/([^/]+)$")),
    ("deployment", re.compile(r"/deployments/([0-9a-f-]{36})$")),
)


def status_read(request: ProxyRequest) -> tuple[str, str] | None:
    """(kind, name) when the request reads one pool, queue or deployment, whose answer carries its ``status``."""
    if request.method != "GET":
        return None
    for kind, pattern in STATUS_READS:
        if match := pattern.search(request.path):
            return kind, match.group(1)
    return None


class AlwaysReady(Deviation):
    """Answers READY where the target says NOT_READY, for pools, queues and deployments alike: a server that keeps
    no readiness (whatever it has heard of is served), so nothing a worker or a Runner stopped serving shows it."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if status_read(request) and response.status == 200:
            body = response.json()
            if isinstance(body, dict) and body.get("status") == "NOT_READY":
                response.set_json({**body, "status": "READY"})
        return response


class ActivityEndsPauses(Deviation):
    """A pool that has had a worker's heartbeat, and a queue that has been polled, read READY though paused: a server
    that sets READY on every sign of a worker, over the pause a user set."""

    def __init__(self) -> None:
        self.active: set[tuple[str, str]] = set()

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and (match := re.search(r"/work_pools/([^/]+)/workers/heartbeat$", request.path)):
            self.active.add(("pool", match.group(1)))
        if request.method == "POST" and re.search(r"/work_pools/[^/]+/get_scheduled_flow_runs$", request.path):
            self.active.update(("queue", name) for name in (request.json() or {}).get("work_queue_names") or [])
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if status_read(request) in self.active and response.status == 200:
            body = response.json()
            if isinstance(body, dict) and body.get("status") == "PAUSED":
                response.set_json({**body, "status": "READY"})
        return response


#: The two routes that create a flow run and honour an ``idempotency_key``.
RUN_CREATES = r"/flow_runs/$|/deployments/[0-9a-f-]{36}/create_flow_run$|/task_runs/$"


class IgnoresIdempotency(AcceptWithout):
    """Makes a new run for every create: a server that never stores a flow run's ``idempotency_key``, nor keeps a
    task run unique by its flow run, ``task_key`` and ``dynamic_key`` (each create gets a ``dynamic_key`` of its
    own)."""

    def __init__(self) -> None:
        super().__init__("POST", RUN_CREATES, "idempotency_key")

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/task_runs/") and request.body:
            request.set_json({**(request.json() or {}), "dynamic_key": str(uuid.uuid4())})
        return super().on_request(request)


def ignores_idempotency() -> Deviation:
    return IgnoresIdempotency()


class UpsertStartsOver(Deviation):
    """A deployment sent again is stored as the request says and no more: what it leaves out is reset (unpaused,
    no tags), as a server that replaces the record rather than updating it."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/deployments/") and request.body:
            request.set_json({"paused": False, "tags": [], "concurrency_limit": None, **(request.json() or {})})
        return None


class AlwaysCreated(Deviation):
    """Answers 201 to a flow-run create that found the run its idempotency key made: the client cannot tell a new
    run from an old one."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == "POST" and re.search(RUN_CREATES, request.path) and response.status == 200:
            response.status = 201
        return response


class ReplacesSchedules(Deviation):
    """A deployment's schedules patched by slug are replaced, not updated: it reads back only the schedules of the
    last PATCH, each under a new id, as a server that deletes them all and makes the ones sent."""

    def __init__(self) -> None:
        self.patched: dict[str, set[str]] = {}

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "PATCH" and (match := re.search(r"/deployments/([0-9a-f-]{36})$", request.path)):
            schedules = (request.json() or {}).get("schedules")
            if schedules is not None:
                self.patched[match.group(1)] = {s.get("slug") for s in schedules}
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        match = re.search(r"/deployments/([0-9a-f-]{36})$", request.path)
        if request.method == "GET" and match and match.group(1) in self.patched and response.status == 200:
            body = response.json()
            slugs = self.patched[match.group(1)]
            body["schedules"] = [
                {**s, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, s["id"]))}
                for s in body.get("schedules") or []
                if s.get("slug") in slugs
            ]
            response.set_json(body)
        return response


class OwnLabelsOnly(Deviation):
    """Flow runs keep only the labels their create sent and the server's own ``prefect.*`` ones: a server that
    inherits nothing from the run's flow or deployment."""

    CREATES = re.compile(r"/flow_runs/$|/deployments/[0-9a-f-]{36}/create_flow_run$")

    def __init__(self) -> None:
        self.sent: dict[str, dict] = {}

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == "POST" and self.CREATES.search(request.path) and response.status in (200, 201):
            self.sent[response.json()["id"]] = (request.json() or {}).get("labels") or {}
        match = re.search(r"/flow_runs/([0-9a-f-]{36})$", request.path)
        if request.method == "GET" and match and match.group(1) in self.sent and response.status == 200:
            body = response.json()
            system = {k: v for k, v in (body.get("labels") or {}).items() if k.startswith("prefect.")}
            response.set_json({**body, "labels": {**system, **self.sent[match.group(1)]}})
        return response


class NoSystemLabels(Deviation):
    """Deployments read back without the server's own ``prefect.*`` labels: a server that adds none."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if (
            request.method == "GET"
            and re.search(r"/deployments/[0-9a-f-]{36}$", request.path)
            and response.status == 200
        ):
            body = response.json()
            labels = {k: v for k, v in (body.get("labels") or {}).items() if not k.startswith("prefect.")}
            response.set_json({**body, "labels": labels})
        return response


#: The filter and count endpoints of the objects the lists checks page through.
LISTED = (
    r"/(flows|flow_runs|task_runs|deployments|work_pools)/(filter|count)$|/work_pools/[^/]+/(queues|workers)/filter$"
)


class OffsetIgnored(Deviation):
    """Lists ignore ``offset``: every page is the first page, as a server that never passes it to its query."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and re.search(LISTED, request.path) and request.body:
            request.set_json({k: v for k, v in (request.json() or {}).items() if k != "offset"})
        return None


class CountsOneMore(Deviation):
    """Counts one object more than the filter selects (an off-by-one, or a deleted object still counted)."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if (
            request.method == "POST"
            and request.path.endswith("/count")
            and re.search(LISTED, request.path)
            and response.status == 200
            and isinstance(response.json(), int)
        ):
            response.set_json(response.json() + 1)
        return response


class RelatedFiltersIgnored(Deviation):
    """Filters only on the listed objects' own fields and by name: a server that drops the filters on related
    objects (a run's deployment, queue; a deployment's runs; a flow's deployments) and on a run's tags and state."""

    RELATED = {
        "/flow_runs/filter": ("deployments", "work_pool_queues"),
        "/deployments/filter": ("flow_runs",),
        "/flows/filter": ("deployments",),
    }

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        dropped = next((keys for path, keys in self.RELATED.items() if request.path.endswith(path)), None)
        if request.method == "POST" and dropped is not None and request.body:
            body = {k: v for k, v in (request.json() or {}).items() if k not in dropped}
            if request.path.endswith("/flow_runs/filter") and isinstance(body.get("flow_runs"), dict):
                body["flow_runs"] = {k: v for k, v in body["flow_runs"].items() if k not in ("tags", "state")}
            request.set_json(body)
        return None


class TimesSortedAsStrings(Deviation):
    """Sorts flow runs by a time as the *string* it returns: ``...T10:00:00Z`` (a whole second) after
    ``...T10:00:00.500000Z``, as a server that stores times as text would."""

    FIELDS = {
        "EXPECTED_START_TIME": "expected_start_time",
        "NEXT_SCHEDULED_START_TIME": "next_scheduled_start_time",
        "START_TIME": "expected_start_time",
    }

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == "POST" and request.path.endswith("/flow_runs/filter") and response.status == 200:
            sort = str((request.json() or {}).get("sort") or "")
            key, _, direction = sort.rpartition("_")
            if key in self.FIELDS:
                field = self.FIELDS[key]
                response.set_json(
                    sorted(response.json(), key=lambda run: run.get(field) or "", reverse=direction == "DESC")
                )
        return response


class LacksTaskRunRecorder(Deviation):
    """Keeps no task runs: ``POST /task_runs/filter`` answers an empty list, as a server without Prefect's task-run
    recorder (which makes task runs from the clients' events) does."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == "POST" and request.path.endswith("/task_runs/filter") and response.status == 200:
            response.set_json([])
        return response


def skip_late(body: dict, items: list) -> list:
    """A poll that filters on the state *name* Scheduled instead of the type SCHEDULED: Late runs are never started."""
    return [item for item in items if (run_of(item).get("state") or {}).get("name") != "Late"]


def string_sorted(body: dict, items: list) -> list:
    """Sorted by the timestamp *string*: '...T10:00:00Z' lands after '...T10:00:00.500000Z'."""
    return sorted(items, key=lambda item: run_of(item).get("next_scheduled_start_time") or "")


def request_bound(body: dict, key: str) -> dt.datetime | None:
    """A polling request's bound as an instant (clients send the space-separated form)."""
    return parse_instant(body[key].replace(" ", "T", 1)) if body.get(key) else None


def exclusive(key: str) -> Callable[[dict, list], list]:
    """A half-open bound: runs exactly at ``key`` (``scheduled_before``/``scheduled_after``) are left out."""

    def fn(body: dict, items: list) -> list:
        bound = request_bound(body, key)
        return items if bound is None else [item for item in items if _nsst(run_of(item)) != bound]

    return fn


exclusive_before = exclusive("scheduled_before")
exclusive_after = exclusive("scheduled_after")


class StringComparedBefore(Deviation):
    """``stored_string <= bound_string`` on the deployments poll: right only when both happen to be written alike.

    The bound is withheld from the reference (which would compare instants) and applied here to the strings.
    """

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/deployments/get_scheduled_flow_runs") and request.body:
            body = request.json()
            request.bound = body.pop("scheduled_before", None)  # type: ignore[attr-defined]
            request.set_json(body)
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        bound = getattr(request, "bound", None)
        if bound and response.status == 200:
            response.set_json([r for r in response.json() if (r.get("next_scheduled_start_time") or "") <= bound])
        return response


def time_sorted_ignoring_priority(body: dict, items: list) -> list:
    return sorted(items, key=lambda item: _nsst(run_of(item)))


def drop_ties(body: dict, items: list) -> list:
    """Keyed by instant somewhere: of several runs at one instant, only the first survives."""
    kept, last = [], None
    for item in items:
        instant = _nsst(run_of(item))
        if instant != last:
            kept.append(item)
        last = instant
    return kept


class DropRequestFields(Deviation):
    """Ignores some fields of the polling requests (``limit``, ``work_queue_names``...)."""

    def __init__(self, *fields: str) -> None:
        self.fields = fields

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/get_scheduled_flow_runs") and request.body:
            body = request.json()
            for name in self.fields:
                body.pop(name, None)
            request.set_json(body)
        return None


class PollFiltersOnlyByTime(Deviation):
    """Answers the deployments poll with every run of the deployments' flows due by the bound, in any state and
    of any deployment: a query that forgot its state and deployment conditions."""

    def __init__(self, upstream_api_url: str) -> None:
        self.upstream = upstream_api_url

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method != "POST" or not request.path.endswith("/deployments/get_scheduled_flow_runs"):
            return None
        import httpx

        body = request.json() or {}
        with httpx.Client(base_url=self.upstream, timeout=10) as http:
            flows = {http.get(f"/deployments/{d}").json()["flow_id"] for d in body.get("deployment_ids", [])}
            runs = http.post(
                "/flow_runs/filter", json={"flows": {"id": {"any_": sorted(flows)}}, "sort": "EXPECTED_START_TIME_ASC"}
            ).json()
        bound = request_bound(body, "scheduled_before")
        for run in runs:  # a run that left SCHEDULED has no next_scheduled_start_time: use the expected one
            run["next_scheduled_start_time"] = run.get("next_scheduled_start_time") or run.get("expected_start_time")
        due = [r for r in runs if bound is None or _nsst(r) <= bound]
        return ProxyResponse.of_json(200, due[: body.get("limit") or None])


class FirstValueOnly(Deviation):
    """Keeps returning the first value it saw of a run's field: a column set on insert and never updated."""

    def __init__(self, field_name: str) -> None:
        self.field_name, self.first = field_name, {}

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if response.status not in (200, 201) or not re.search(r"/flow_runs/([0-9a-f-]{36})?$", request.path):
            return response
        run = response.json()
        if isinstance(run, dict) and "id" in run:
            run[self.field_name] = self.first.setdefault(run["id"], run.get(self.field_name))
            response.set_json(run)
        return response


# --- deviations of the response schemas -----------------------------------------------------------------------


def map_objects(document: Any, fn: Callable[[dict], dict]) -> Any:
    """Apply ``fn`` to every JSON object in a document, innermost first."""
    if isinstance(document, dict):
        return fn({k: map_objects(v, fn) for k, v in document.items()})
    if isinstance(document, list):
        return [map_objects(v, fn) for v in document]
    return document


class RewriteObjects(Deviation):
    """Applies ``fn`` to every JSON object of every successful JSON answer."""

    def __init__(self, fn: Callable[[dict], dict]) -> None:
        self.fn = fn

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if response.status not in (200, 201) or "json" not in dict(response.headers).get("content-type", ""):
            return response
        response.set_json(map_objects(response.json(), self.fn))
        return response


def is_flow_run(value: dict) -> bool:
    return "flow_id" in value and "next_scheduled_start_time" in value


def wrong_types(value: dict) -> dict:
    """Every object's ``created`` a number, an orchestration result's ``status`` a word Prefect does not know."""
    if "created" in value:
        value = {**value, "created": 1764316800}
    if "status" in value and "state" in value:
        value = {**value, "status": "OK"}
    return value


def without_flow_id_with_an_extra_field(value: dict) -> dict:
    """Flow runs lose the required ``flow_id``; every model object (one with an ``id``; not a map such as
    ``labels``) gains a field Prefect's document does not list."""
    if "id" in value:
        value = {**value, "x_port_extension": {"shard": 3}}
    return {k: v for k, v in value.items() if k != "flow_id"} if is_flow_run(value) else value


# --- deviations the differential checks must find ---------------------------------------------------------------


def renamed_next_scheduled_start_time(value: dict) -> dict:
    """Flow runs call ``next_scheduled_start_time`` ``next_start_time``: a rename no hand-written check names."""
    if not is_flow_run(value):
        return value
    return {("next_start_time" if k == "next_scheduled_start_time" else k): v for k, v in value.items()}


class EverythingSlightlyOff(RewriteObjects):
    """Times of handling sent as epoch numbers (``created``, a state's ``timestamp``), and a run in a state type
    Prefect does not know accepted instead of refused."""

    def __init__(self) -> None:
        super().__init__(
            lambda value: {k: (1764316800 if k in ("created", "timestamp") else v) for k, v in value.items()}
        )

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/flow_runs/") and b"NOT_A_STATE" in request.body:
            return ProxyResponse.of_json(201, {"id": "00000000-0000-0000-0000-000000000000", "state": None})
        return None


def epoch_created(value: dict) -> dict:
    """``created`` as epoch seconds: Prefect's clients read it (pydantic takes a number for a datetime), but it
    breaks the schema every other client of the API was written against."""
    return {**value, "created": 1764316800} if "created" in value else value


class ServerErrorInsteadOf422(Deviation):
    """A server whose validation errors escape as unhandled exceptions: every 422 becomes a bare 500."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if response.status != 422:
            return response
        return ProxyResponse(500, [("content-type", "text/plain; charset=utf-8")], b"Internal Server Error")


#: The state types Prefect knows; a server that checks none of them stores whatever a client sends.
STATE_TYPES = frozenset(
    {"SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED", "PAUSED", "CANCELLING"}
)


class StoresUnknownStateTypes(Deviation):
    """A server that takes any string as a state type: a run created or moved into a state type Prefect does not
    know is stored (here as PENDING, the nearest thing the reference behind the proxy can store)."""

    PATH = re.compile(r"/flow_runs/([0-9a-f-]{36}/set_state)?$")

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method != "POST" or not self.PATH.search(request.path) or not request.body:
            return None
        try:
            body = request.json()
        except ValueError:
            return None
        state = body.get("state") if isinstance(body, dict) else None
        if isinstance(state, dict) and isinstance(state.get("type"), str) and state["type"] not in STATE_TYPES:
            request.set_json({**body, "state": {**state, "type": "PENDING"}})
        return None


class RewriteScheduleEntries(Deviation):
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


class RewriteSchedules(RewriteScheduleEntries):
    """``transform`` applied to the ``schedule`` of each deployment schedule a client sends."""

    def __init__(self, transform: Callable[[dict], dict]) -> None:
        super().__init__(lambda entry: {**entry, "schedule": transform(dict(entry["schedule"]))})


def stores_refused_schedules() -> RewriteSchedules:
    """A server that checks a schedule's shape and nothing more: each of the schedules Prefect refuses
    (``REFUSED_SCHEDULES``: a zero interval, an invalid cron string, an unknown time zone, ...) is stored, here as
    an hourly interval, the nearest thing the reference behind the proxy stores."""
    from harness.checks.bad_input import REFUSED_SCHEDULES

    return RewriteSchedules(lambda s: {"interval": 3600} if s in REFUSED_SCHEDULES.values() else s)


def interval_schedules(change: Callable[[dict], dict]) -> RewriteSchedules:
    """``change`` applied to interval schedules only (those with an ``interval``)."""
    return RewriteSchedules(lambda s: change(s) if "interval" in s else s)


class RefusesRunsBeyond(Deviation):
    """Admits at most ``n`` flow runs into RUNNING a minute: a run's proposal of RUNNING within a minute of ``n``
    admitted ones is answered 500, as a server that runs out of a resource per run and frees it slowly would (the
    engine then crashes the run). Counted over a window, not over runs alive at once, so the verdict does not depend
    on how the machine's load spreads the runs' starts. ``n`` 0 admits none."""

    WINDOW = 60.0

    def __init__(self, n: int) -> None:
        self.n, self.admitted = n, {}

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        match = re.search(r"/flow_runs/([0-9a-f-]{36})/set_state$", request.path)
        if request.method != "POST" or not match:
            return None
        run, kind = match.group(1), ((request.json() or {}).get("state") or {}).get("type")
        if kind == "RUNNING" and run not in self.admitted:
            now = time.monotonic()
            if sum(1 for at in self.admitted.values() if now - at < self.WINDOW) >= self.n:
                return ProxyResponse(500, [("content-type", "application/json")], b'{"detail": "out of run slots"}')
            self.admitted[run] = now
        return None
