"""The filter endpoints' pages and counts gone wrong: offsets ignored, counts off by one, related filters ignored,
times sorted as strings."""

from __future__ import annotations

import re

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation

#: The filter and count endpoints of the objects the lists checks page through.
LISTED = (
    r"/(flows|flow_runs|task_runs|deployments|work_pools)/(filter|count)$|/work_pools/[^/]+/(queues|workers)/filter$"
)


class IgnoresOffset(Deviation):
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


class IgnoresRelatedFilters(Deviation):
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


class SortsTimesAsStrings(Deviation):
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
