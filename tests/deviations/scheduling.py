"""The scheduling queries and polls answered wrongly: ties dropped, bounds compared as strings, paused pools polled,
retries rescheduled."""

from __future__ import annotations

import datetime as dt
import re
from typing import Callable

from harness.checks.timestamps import parse_instant
from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation, RewritesPolls, run_of


class IgnoresPause(Deviation):
    """Accepts pausing a work pool or queue (204) without pausing it: a server whose polls ignore ``is_paused``."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "PATCH" and "/work_pools/" in request.path and request.body:
            if (request.json() or {}).get("is_paused") is True:
                return ProxyResponse(204, [], b"")
        return None


class AnswersEmptyPolls(Deviation):
    """Both polling endpoints answer 200 with no runs: the query is implemented but never matches anything
    (for instance because it compares timestamp strings)."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/get_scheduled_flow_runs"):
            return ProxyResponse.of_json(200, [])
        return None


def _nsst(run: dict) -> dt.datetime:
    value = run.get("next_scheduled_start_time")
    return parse_instant(value) if value else dt.datetime.min.replace(tzinfo=dt.timezone.utc)


class HandsOutOnce(RewritesPolls):
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


class ComparesBeforeAsStrings(Deviation):
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


class DropsRequestFields(Deviation):
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


class FiltersPollsOnlyByTime(Deviation):
    """Answers the deployments poll with every run of the deployments' flows due by the bound, in any state and
    of any deployment: a query that forgot its state and deployment conditions."""

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


class ReadsFirstValueOnly(Deviation):
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
