"""A run's life beyond scheduling gone wrong: cancellation ignored, crashes refused, resumes refused, limits that
limit nothing, no pending guard."""

from __future__ import annotations

import re
from collections import Counter

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation, RewritesPolls, force_through, run_of


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


class MakesFailuresFinal(Deviation):
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


class LacksPendingGuard(RewritesPolls):
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


class LacksTaskRunRecorder(Deviation):
    """Keeps no task runs: ``POST /task_runs/filter`` answers an empty list, as a server without Prefect's task-run
    recorder (which makes task runs from the clients' events) does."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == "POST" and request.path.endswith("/task_runs/filter") and response.status == 200:
            response.set_json([])
        return response
