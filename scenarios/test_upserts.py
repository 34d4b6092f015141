"""Upserts and idempotency: what a client sends again finds what it made the first time.

Real-client behaviour relied on (Prefect 3.9.1): ``.serve()`` and ``prefect deploy`` send ``POST /deployments/`` for
the same flow and name every time they start, and change a deployment's schedules with ``PATCH
/deployments/{id}`` naming each schedule by its ``slug``; automations, ``run_deployment`` callers and users'
own retries send ``POST /flow_runs/`` or ``POST /deployments/{id}/create_flow_run`` with an ``idempotency_key``
so that a request sent twice (a timeout, a retried webhook) makes one run.

What Prefect's server does (``api/deployments.py``, ``api/flow_runs.py``, ``models/deployments.py``):

- A flow run created with an ``idempotency_key`` already used for that flow (or deployment) is the run made the
  first time: the same id, answered 200, where a new run is answered 201. A task run created again for the same
  flow run, ``task_key`` and ``dynamic_key`` (a flow run's engine retrying its create) is likewise the first.
- ``POST /deployments/`` for an existing flow and name updates that deployment in place (same id, answered 200
  rather than 201): what the request sets is changed, what it leaves out (a pause the user set, tags, a
  description) is kept.
- ``PATCH /deployments/{id}`` with schedules whose ``slug`` names an existing schedule changes that schedule in
  place (same id), where every schedule already has a slug.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest

from harness.checks.objects import NO_PARAMETERS_SCHEMA, Created, create_flow, scheduled_state
from harness.checks.timestamps import utc_now
from harness.errors import UnexpectedAnswer
from harness.target.api import Answer, ApiClient

pytestmark = pytest.mark.upserts


def created_or_found(answer: Answer, what: str) -> dict[str, Any]:
    """The object a create answered with (201 or 200), or the check fails quoting the answer."""
    body = answer.expect((200, 201), what=what)
    if not isinstance(body, dict) or not body.get("id"):
        raise UnexpectedAnswer(f"{answer.describe()}: not the object {what} made or found")
    return body


def assert_one_run(first: Answer, second: Answer, route: str) -> None:
    """The second create of the same run answered the first run, 200 where the first had 201."""
    key = "task_key and dynamic_key" if route.startswith("POST /task_runs/") else "idempotency_key"
    one, two = created_or_found(first, f"{route} with a {key}"), created_or_found(second, f"{route} again with it")
    assert two["id"] == one["id"], (
        f"{route} sent twice with one {key} made two runs ({one['id']} and then {two['id']}); Prefect "
        "answers the second with the run the first made, so a request a client retries makes one run"
    )
    assert (first.status, second.status) == (201, 200), (
        f"{route} sent twice with one {key} was answered {first.status} and then {second.status} (the same "
        "run); Prefect answers 201 for the run it makes and 200 for the one it found, which is how a client tells them "
        "apart"
    )


def test_a_flow_run_sent_twice_with_one_idempotency_key_is_one_run(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """``POST /flow_runs/`` twice with the same ``idempotency_key`` for the same flow: one run, 201 then 200."""
    flow = create_flow(api, created, names("flow"))
    body = {
        "flow_id": flow["id"],
        "name": names("run"),
        "idempotency_key": f"pc-{uuid.uuid4()}",
        "state": scheduled_state(utc_now()),
    }
    assert_one_run(
        api.request("POST", "/flow_runs/", json_body=body),
        api.request("POST", "/flow_runs/", json_body=body),
        "POST /flow_runs/",
    )


def test_a_task_run_sent_twice_is_one_task_run(api: ApiClient, created: Created, names: Callable[..., str]) -> None:
    """``POST /task_runs/`` twice for the same flow run, ``task_key`` and ``dynamic_key``: one task run, 201 then
    200."""
    flow = create_flow(api, created, names("flow"))
    run = api.post("/flow_runs/", {"flow_id": flow["id"], "name": names("run")})
    body = {"flow_run_id": run["id"], "name": names("task"), "task_key": names("task-key"), "dynamic_key": "0"}
    assert_one_run(
        api.request("POST", "/task_runs/", json_body=body),
        api.request("POST", "/task_runs/", json_body=body),
        "POST /task_runs/",
    )


def create_deployment_answer(api: ApiClient, flow_id: str, name: str, **fields: Any) -> Answer:
    return api.request(
        "POST",
        "/deployments/",
        json_body={"flow_id": flow_id, "name": name, "parameter_openapi_schema": NO_PARAMETERS_SCHEMA, **fields},
    )


def test_a_deployment_run_sent_twice_with_one_idempotency_key_is_one_run(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """``POST /deployments/{id}/create_flow_run`` twice with the same ``idempotency_key``: one run, 201 then 200."""
    flow = create_flow(api, created, names("flow"))
    deployment = created_or_found(create_deployment_answer(api, flow["id"], names("deployment")), "POST /deployments/")
    created.add(f"/deployments/{deployment['id']}")
    route = f"/deployments/{deployment['id']}/create_flow_run"
    body = {"name": names("run"), "idempotency_key": f"pc-{uuid.uuid4()}", "state": scheduled_state(utc_now())}
    assert_one_run(
        api.request("POST", route, json_body=body),
        api.request("POST", route, json_body=body),
        "POST /deployments/{id}/create_flow_run",
    )


def test_a_deployment_sent_again_keeps_its_id_and_what_the_request_left_out(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A deployment created with a description, tags and a concurrency limit, then paused by its user, is sent again
    (``POST /deployments/``, as ``.serve()`` does on each start) with only a new description: the same deployment,
    answered 200, with the new description, its tags, its limit and its pause. (Its schedules are not kept so:
    Prefect replaces them with the request's on every upsert.)"""
    flow, name = create_flow(api, created, names("flow")), names("deployment")
    first = created_or_found(
        create_deployment_answer(
            api, flow["id"], name, description="as first sent", tags=["pc-kept"], concurrency_limit=3
        ),
        "POST /deployments/",
    )
    created.add(f"/deployments/{first['id']}")
    api.call(
        "PATCH",
        f"/deployments/{first['id']}",
        {"paused": True},
        expect=(200, 204),
        what="pausing the deployment failed",
    )
    again = create_deployment_answer(api, flow["id"], name, description="as sent again")
    second = created_or_found(again, "POST /deployments/ again for the same flow and name")
    assert second["id"] == first["id"] and again.status == 200, (
        f"POST /deployments/ again for the same flow and name answered {again.status} with deployment {second['id']} "
        f"(the first was {first['id']}); Prefect updates the deployment it has, answering 200"
    )
    kept = api.get(f"/deployments/{first['id']}")
    found = {key: kept.get(key) for key in ("description", "tags", "paused")}
    # Since 3.4 the limit is read back as a global concurrency limit; before, as concurrency_limit.
    found["concurrency_limit"] = (kept.get("global_concurrency_limit") or {}).get("limit") or kept.get(
        "concurrency_limit"
    )
    wanted = {"description": "as sent again", "tags": ["pc-kept"], "paused": True, "concurrency_limit": 3}
    assert found == wanted, (
        f"the deployment sent again with only a new description reads {found}; Prefect changes what the request set "
        f"and keeps the rest: {wanted} (a Runner that restarts must not undo its user's pause)"
    )


def test_a_schedule_patched_by_its_slug_is_changed_in_place(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A deployment with two schedules named by slugs: ``PATCH /deployments/{id}`` with one of them (same slug, a new
    interval) changes that schedule in place, its id kept, and leaves the other as it was."""
    flow = create_flow(api, created, names("flow"))
    schedules = [
        {"schedule": {"interval": 3600}, "active": False, "slug": "pc-hourly"},
        {"schedule": {"interval": 86400}, "active": False, "slug": "pc-daily"},
    ]
    deployment = created_or_found(
        create_deployment_answer(api, flow["id"], names("deployment"), schedules=schedules),
        "POST /deployments/ with two schedules",
    )
    created.add(f"/deployments/{deployment['id']}")
    before = {s.get("slug"): s for s in api.get(f"/deployments/{deployment['id']}").get("schedules") or []}
    assert set(before) == {"pc-hourly", "pc-daily"}, (
        f"the deployment created with schedules of slugs pc-hourly and pc-daily has schedules {sorted(before)}; "
        "Prefect keeps each schedule's slug"
    )
    api.call(
        "PATCH",
        f"/deployments/{deployment['id']}",
        {"schedules": [{"schedule": {"interval": 7200}, "active": False, "slug": "pc-hourly"}]},
        expect=(200, 204),
        what="patching a schedule by its slug failed",
    )
    after = api.get(f"/deployments/{deployment['id']}").get("schedules") or []
    seen = [
        (
            s.get("slug"),
            (s.get("schedule") or {}).get("interval"),
            s.get("id") == before.get(s.get("slug"), {}).get("id"),
        )
        for s in after
    ]
    assert sorted(seen) == [("pc-daily", 86400.0, True), ("pc-hourly", 7200.0, True)], (
        f"after PATCH /deployments/{{id}} with schedule pc-hourly at a new interval of 7200 s, its schedules are "
        f"(slug, interval, same id as before) {sorted(seen)}; Prefect changes pc-hourly in place (its id kept) and "
        "leaves pc-daily as it was"
    )
