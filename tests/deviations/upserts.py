"""What a client sends again made anew: idempotency keys ignored, upserts that start over, schedules replaced."""

from __future__ import annotations

import re
import uuid

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import AcceptsWithout, Deviation

#: The two routes that create a flow run and honour an ``idempotency_key``.
RUN_CREATES = r"/flow_runs/$|/deployments/[0-9a-f-]{36}/create_flow_run$|/task_runs/$"


class IgnoresIdempotency(AcceptsWithout):
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


class StartsUpsertsOver(Deviation):
    """A deployment sent again is stored as the request says and no more: what it leaves out is reset (unpaused,
    no tags), as a server that replaces the record rather than updating it."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/deployments/") and request.body:
            request.set_json({"paused": False, "tags": [], "concurrency_limit": None, **(request.json() or {})})
        return None


class AlwaysCreates(Deviation):
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
