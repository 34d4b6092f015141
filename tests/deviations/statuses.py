"""Statuses a server keeps wrongly: everything READY, pauses ended by activity."""

from __future__ import annotations

import re

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation

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


class ReportsAlwaysReady(Deviation):
    """Answers READY where the target says NOT_READY, for pools, queues and deployments alike: a server that keeps
    no readiness (whatever it has heard of is served), so nothing a worker or a Runner stopped serving shows it."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if status_read(request) and response.status == 200:
            body = response.json()
            if isinstance(body, dict) and body.get("status") == "NOT_READY":
                response.set_json({**body, "status": "READY"})
        return response


class EndsPausesOnActivity(Deviation):
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
