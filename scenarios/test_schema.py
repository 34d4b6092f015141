"""Response schemas: the answers of the routes real clients use match Prefect's OpenAPI document.

Runners, workers and the task machinery parse these answers into Prefect's models. Each check makes the call a
real client makes, on this run's own objects, and judges the answer by the document of Prefect's server
(:mod:`harness.checks.schema`): a required field left out, a wrong type or an unknown enum value fails, quoting
the JSON path, the schema's expectation and the value sent; an extra field is not a failure, and datetimes are
the ``timestamps`` feature's to judge. One check per route, named ``schema/response[METHOD /route]`` with the
route as Prefect's document names it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from harness.checks.objects import Created, create_deployment, create_flow, create_work_pool, scheduled_state
from harness.checks.schema import assert_answer_matches
from harness.plugin.fixtures import ApiContract
from harness.target.api import ApiClient

pytestmark = pytest.mark.schema

Names = Callable[..., str]


@dataclass(frozen=True)
class Objects:
    """This run's objects the routes are called on: a flow, its deployment in a process pool, one SCHEDULED run
    of that deployment coming due within the hour (so both polls hand it out), and a task run."""

    flow_id: str
    deployment_id: str
    pool_name: str
    run_id: str
    run_time: str
    task_run_id: str


@pytest.fixture(scope="module")
def objects(api: ApiClient, module_created: Created, module_names: Names) -> Objects:
    flow = create_flow(api, module_created, module_names("flow"))
    pool = create_work_pool(api, module_created, module_names("pool"))
    deployment = create_deployment(api, flow["id"], module_names("deployment"), work_pool_name=pool["name"])
    run_time = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)).isoformat()
    run = api.post(f"/deployments/{deployment['id']}/create_flow_run", {"state": scheduled_state(run_time)})
    task_run = api.post("/task_runs/", task_run_body(module_names("task")))
    module_created.add(f"/task_runs/{task_run['id']}")
    return Objects(flow["id"], deployment["id"], pool["name"], run["id"], run_time, task_run["id"])


def task_run_body(name: str) -> dict[str, Any]:
    """A background task run as ``task.delay()`` creates it: SCHEDULED, no flow run."""
    return {"name": name, "task_key": name, "dynamic_key": "0", "state": {"type": "SCHEDULED", "name": "Scheduled"}}


def within_the_hour() -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()


@dataclass(frozen=True)
class Route:
    """A call a real client makes: ``template`` as Prefect's OpenAPI document names the route."""

    method: str
    template: str
    path: Callable[[Objects], str]
    body: Callable[[Objects, Names], Any] = field(default=lambda objects, names: None)
    #: The path that deletes what the call created (from its answer), when it creates something.
    owns: Callable[[dict[str, Any]], str] | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


#: ``GET /admin/version`` is not here: preflight refuses a target whose version is not a string before any check,
#: and the handshake feature judges the version itself.
ROUTES = [
    Route("POST", "/flows/", lambda o: "/flows/", lambda o, n: {"name": n("flow")}, owns=lambda a: f"/flows/{a['id']}"),
    Route("GET", "/flows/{id}", lambda o: f"/flows/{o.flow_id}"),
    Route("POST", "/flows/filter", lambda o: "/flows/filter", lambda o, n: {"flows": {"id": {"any_": [o.flow_id]}}}),
    Route(
        "POST",
        "/deployments/",
        lambda o: "/deployments/",
        lambda o, n: {"flow_id": o.flow_id, "name": n("deployment"), "work_pool_name": o.pool_name},
        owns=lambda a: f"/deployments/{a['id']}",
    ),
    Route("GET", "/deployments/{id}", lambda o: f"/deployments/{o.deployment_id}"),
    Route(
        "POST",
        "/deployments/filter",
        lambda o: "/deployments/filter",
        lambda o, n: {"deployments": {"id": {"any_": [o.deployment_id]}}},
    ),
    Route(
        "POST",
        "/deployments/get_scheduled_flow_runs",
        lambda o: "/deployments/get_scheduled_flow_runs",
        lambda o, n: {"deployment_ids": [o.deployment_id], "scheduled_before": within_the_hour()},
    ),
    Route(
        "POST",
        "/deployments/{id}/create_flow_run",
        lambda o: f"/deployments/{o.deployment_id}/create_flow_run",
        lambda o, n: {"state": scheduled_state(within_the_hour())},
        owns=lambda a: f"/flow_runs/{a['id']}",
    ),
    Route(
        "POST",
        "/flow_runs/",
        lambda o: "/flow_runs/",
        lambda o, n: {"flow_id": o.flow_id, "name": n("run"), "state": scheduled_state(within_the_hour())},
        owns=lambda a: f"/flow_runs/{a['id']}",
    ),
    Route("GET", "/flow_runs/{id}", lambda o: f"/flow_runs/{o.run_id}"),
    Route(
        "POST",
        "/flow_runs/filter",
        lambda o: "/flow_runs/filter",
        lambda o, n: {"flow_runs": {"id": {"any_": [o.run_id]}}},
    ),
    # What a worker does before it submits a run; forced back to the same SCHEDULED state, so the run stays due.
    Route(
        "POST",
        "/flow_runs/{id}/set_state",
        lambda o: f"/flow_runs/{o.run_id}/set_state",
        lambda o, n: {"state": scheduled_state(o.run_time), "force": True},
    ),
    Route(
        "POST",
        "/work_pools/",
        lambda o: "/work_pools/",
        lambda o, n: {"name": n("pool"), "type": "process"},
        owns=lambda a: f"/work_pools/{a['name']}",
    ),
    Route("GET", "/work_pools/{name}", lambda o: f"/work_pools/{o.pool_name}"),
    Route(
        "POST",
        "/work_pools/{name}/get_scheduled_flow_runs",
        lambda o: f"/work_pools/{o.pool_name}/get_scheduled_flow_runs",
        lambda o, n: {"scheduled_before": within_the_hour()},
    ),
    Route(
        "POST",
        "/task_runs/",
        lambda o: "/task_runs/",
        lambda o, n: task_run_body(n("task")),
        owns=lambda a: f"/task_runs/{a['id']}",
    ),
    Route("GET", "/task_runs/{id}", lambda o: f"/task_runs/{o.task_run_id}"),
]


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_response(
    route: Route, api: ApiClient, objects: Objects, created: Created, names: Names, api_contract: ApiContract
) -> None:
    """The answer to {route} matches the schema Prefect's OpenAPI document gives it."""
    answer = api.request(route.method, route.path(objects), json_body=route.body(objects, names))
    if route.owns is not None and answer.status in (200, 201):
        created.add(route.owns(answer.json()))
    assert_answer_matches(answer, api_contract.document, api_contract.version, route.template)
