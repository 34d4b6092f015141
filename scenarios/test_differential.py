"""Differential: one fixed sequence of the calls real clients make, on the target and on Prefect's own server.

Each check is one step of the sequence (create a flow, a pool, a deployment in it, a scheduled run; read it;
poll both endpoints; move the run through PENDING, RUNNING, COMPLETED; filter; read back), sent to both servers
on each server's own objects. The answers must agree after normalising what legitimately differs between two
servers (:mod:`harness.checks.differential`: ids, the names this run chose, times of handling; datetimes as
instants); a difference quotes the JSON path, the reference's value and the target's. This finds what no
hand-written check names: a renamed field, another default, a state name in another case.

Runs with ``prefect-conformance run --differential`` (against the bundled reference, started beside the
target; with no ``--target``, the reference is compared with itself, which proves the normalisation).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest

from harness.checks.differential import Normaliser, assert_same_answer
from harness.checks.objects import NO_PARAMETERS_SCHEMA, Created, scheduled_state
from harness.checks.timestamps import describe_instant
from harness.errors import HarnessError
from harness.target.api import Answer, ApiClient, UnexpectedAnswer

pytestmark = pytest.mark.differential

ROLES = ("flow", "pool", "deployment")


@dataclass
class Side:
    """One server's half of the sequence: its client, its objects, and the normaliser of its answers."""

    label: str
    api: ApiClient
    created: Created
    names: dict[str, str]
    normalise: Normaliser
    ids: dict[str, str] = field(default_factory=dict)

    def id(self, role: str) -> str:
        if role not in self.ids:
            # An earlier step failed there: the target's fault on the target, the harness's on Prefect's own server.
            fault = HarnessError if self.label == "reference" else UnexpectedAnswer
            raise fault(f"the {self.label} has no {role} to call this on: an earlier step failed there")
        return self.ids[role]


@dataclass(frozen=True)
class Sequence:
    reference: Side
    target: Side
    #: The scheduled run's time, the same instant on both servers.
    when: dt.datetime


@pytest.fixture(scope="module")
def sequence(api: ApiClient, reference_api: ApiClient, module_names: Callable[..., str]) -> Iterator[Sequence]:
    sides = []
    for label, client in (("reference", reference_api), ("target", api)):
        names = {role: module_names(role, label) for role in ROLES}
        sides.append(
            Side(label, client, Created(client), names, Normaliser({name: role for role, name in names.items()}))
        )
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(minutes=10)
    yield Sequence(sides[0], sides[1], when)
    for side in sides:
        side.created.delete_all()


@dataclass(frozen=True)
class Step:
    """One call of the sequence; ``keep`` remembers what later steps need from the answer."""

    title: str
    method: str
    path: Callable[[Side], str]
    body: Callable[[Side, dt.datetime], Any] = field(default=lambda side, when: None)
    keep: Callable[[Side, Any], None] = field(default=lambda side, answer: None)

    def __str__(self) -> str:
        return self.title


def keep_as(role: str, cleanup: str | None = None) -> Callable[[Side, Any], None]:
    def keep(side: Side, answer: Any) -> None:
        side.ids[role] = answer["id"]
        if cleanup:
            side.created.add(cleanup.format(id=answer["id"], name=answer.get("name")))

    return keep


def keep_run(side: Side, answer: Any) -> None:
    side.ids["run"] = answer["id"]
    side.normalise.learn(answer["name"], "run")  # Prefect generates it


def state(kind: str) -> Callable[[Side, dt.datetime], Any]:
    return lambda side, when: {"state": {"type": kind}}


STEPS = [
    Step(
        "create a flow",
        "POST",
        lambda s: "/flows/",
        lambda s, w: {"name": s.names["flow"]},
        keep_as("flow", "/flows/{id}"),
    ),
    Step(
        "create a process work pool",
        "POST",
        lambda s: "/work_pools/",
        lambda s, w: {"name": s.names["pool"], "type": "process"},
        keep_as("pool", "/work_pools/{name}"),
    ),
    Step(
        "create a deployment in the pool",
        "POST",
        lambda s: "/deployments/",
        lambda s, w: {
            "flow_id": s.id("flow"),
            "name": s.names["deployment"],
            "work_pool_name": s.names["pool"],
            "parameter_openapi_schema": NO_PARAMETERS_SCHEMA,
        },
        keep_as("deployment"),
    ),
    Step(
        "create a scheduled run of the deployment",
        "POST",
        lambda s: f"/deployments/{s.id('deployment')}/create_flow_run",
        lambda s, w: {"state": scheduled_state(w)},
        keep_run,
    ),
    Step("read the run", "GET", lambda s: f"/flow_runs/{s.id('run')}"),
    Step(
        "poll the deployment as a Runner does",
        "POST",
        lambda s: "/deployments/get_scheduled_flow_runs",
        lambda s, w: {
            "deployment_ids": [s.id("deployment")],
            "scheduled_before": describe_instant(w + dt.timedelta(hours=1)),
        },
    ),
    Step(
        "poll the work pool as a worker does",
        "POST",
        lambda s: f"/work_pools/{s.names['pool']}/get_scheduled_flow_runs",
        lambda s, w: {"scheduled_before": describe_instant(w + dt.timedelta(hours=1))},
    ),
    Step("read the deployment after the polls", "GET", lambda s: f"/deployments/{s.id('deployment')}"),
    Step("propose PENDING", "POST", lambda s: f"/flow_runs/{s.id('run')}/set_state", state("PENDING")),
    Step("propose RUNNING", "POST", lambda s: f"/flow_runs/{s.id('run')}/set_state", state("RUNNING")),
    Step("propose COMPLETED", "POST", lambda s: f"/flow_runs/{s.id('run')}/set_state", state("COMPLETED")),
    Step(
        "filter the runs by id",
        "POST",
        lambda s: "/flow_runs/filter",
        lambda s, w: {"flow_runs": {"id": {"any_": [s.id("run")]}}},
    ),
    Step("read the work pool", "GET", lambda s: f"/work_pools/{s.names['pool']}"),
    Step("read the flow", "GET", lambda s: f"/flows/{s.id('flow')}"),
    Step(
        "create a run in a state Prefect does not know",
        "POST",
        lambda s: "/flow_runs/",
        lambda s, w: {"flow_id": s.id("flow"), "state": {"type": "NOT_A_STATE"}},
    ),
]


def take(step: Step, side: Side, when: dt.datetime) -> tuple[Answer, Any]:
    """Send the step to one server; its answer and, for a successful JSON answer, the normalised body."""
    answer = side.api.request(step.method, step.path(side), json_body=step.body(side, when))
    if not 200 <= answer.status < 300 or not answer.text:
        return answer, None
    body = answer.json()
    step.keep(side, body)
    return answer, side.normalise(body)


@pytest.mark.parametrize("step", STEPS, ids=str)
def test_step(step: Step, sequence: Sequence) -> None:
    """The target answers "{step}" as Prefect's own server does."""
    reference, expected = take(step, sequence.reference, sequence.when)
    if reference.status >= 500:
        raise HarnessError(f"the reference itself answered {reference.describe()}: nothing to compare with")
    target, actual = take(step, sequence.target, sequence.when)
    assert_same_answer(reference, expected, target, actual)
