"""Scheduler: a deployment's schedules, each with its own runs: deleting a schedule or a deployment takes its
scheduled runs with it, several schedules give their runs their own parameters and slug, and an inactive schedule
makes none until it is activated.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import pytest

from harness.checks.objects import Created, create_deployment, create_flow
from harness.checks.schedules import expand_schedules, prefect_occurrences, scheduled_runs
from harness.checks.timestamps import UTC, describe_instant, read_instant
from harness.target.api import ApiClient

pytestmark = pytest.mark.scheduler

# --- deleting: a schedule's or a deployment's scheduled runs go with it -----------------------------------------

HOURLY = {"cron": "0 * * * *", "timezone": "UTC"}
#: A window far enough ahead that no run in it is due, or late, while the check runs.
WINDOW = (dt.datetime(2027, 1, 10, tzinfo=UTC), dt.datetime(2027, 1, 10, 4, tzinfo=UTC))


def expanded_deployment(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> tuple[dict[str, Any], list[str]]:
    """A paused deployment with an ``HOURLY`` schedule, expanded over ``WINDOW``: it and its SCHEDULED runs' ids."""
    flow = create_flow(api, created, names("flow"))
    deployment = create_deployment(
        api, flow["id"], names("deployment"), paused=True, schedules=[{"schedule": HOURLY, "active": True}]
    )
    expand_schedules(api, deployment["id"], *WINDOW)
    runs = [run["id"] for run in scheduled_runs(api, deployment["id"])]
    expected = len(prefect_occurrences(HOURLY, *WINDOW))
    assert len(runs) == expected, (
        f"expanding {HOURLY} from {describe_instant(WINDOW[0])} to {describe_instant(WINDOW[1])} should give "
        f"{expected} SCHEDULED runs, as in Prefect; got {len(runs)}"
    )
    return deployment, runs


def still_scheduled(api: ApiClient, run_ids: list[str]) -> list[str]:
    """The runs among ``run_ids`` that still exist in a SCHEDULED state."""
    left = []
    for run_id in run_ids:
        answer = api.request("GET", f"/flow_runs/{run_id}")
        if answer.status != 404 and (
            (answer.expect(200, what="reading a run back failed").get("state") or {}).get("type") == "SCHEDULED"
        ):
            left.append(run_id)
    return left


def test_deleting_a_schedule_removes_its_scheduled_runs(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """Deleting a deployment's schedule removes the SCHEDULED runs it created: no worker or Runner finds them."""
    deployment, runs = expanded_deployment(api, created, names)
    (schedule,) = api.get(f"/deployments/{deployment['id']}/schedules")
    api.call("DELETE", f"/deployments/{deployment['id']}/schedules/{schedule['id']}", expect=(200, 204))
    left = still_scheduled(api, runs)
    assert not left, (
        f"{len(left)} of the {len(runs)} SCHEDULED runs of the deleted schedule are still there after DELETE "
        "/deployments/{id}/schedules/{schedule_id}; Prefect deletes a schedule's scheduled runs with it"
    )


def test_deleting_a_deployment_leaves_no_scheduled_runs(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """Deleting a deployment removes its SCHEDULED runs: no worker or Runner may find them afterwards."""
    deployment, runs = expanded_deployment(api, created, names)
    api.call("DELETE", f"/deployments/{deployment['id']}", expect=(200, 204))
    left = still_scheduled(api, runs)
    assert not left, (
        f"{len(left)} of the deployment's {len(runs)} SCHEDULED runs are still there after DELETE /deployments/{{id}}"
    )


# --- several schedules on one deployment: each its own runs, parameters and slug; inactive ones make none ----------

#: Two schedules of one deployment, both expanded over ``WINDOW``: at 15 and 45 minutes past each hour.
MORNING = {
    "schedule": {"cron": "15 * * * *", "timezone": "UTC"},
    "active": True,
    "slug": "quarter-past",
    "parameters": {"b": "from-quarter-past"},
}
EVENING = {
    "schedule": {"cron": "45 * * * *", "timezone": "UTC"},
    "active": True,
    "slug": "quarter-to",
    "parameters": {"a": "from-quarter-to"},
}
DEPLOYMENT_PARAMETERS = {"a": "from-deployment", "b": "from-deployment"}
PARAMETERS_SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}


def two_schedule_deployment(
    api: ApiClient,
    created: Created,
    names: Callable[..., str],
    *,
    evening_active: bool = True,
    own_parameters: bool = False,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A paused deployment with :data:`MORNING` and :data:`EVENING` (maybe inactive; with their slugs and parameters
    only if ``own_parameters``: servers before 3.1 refuse both), and its schedules by slug."""
    flow = create_flow(api, created, names("flow"))
    specs = [MORNING, {**EVENING, "active": evening_active}]
    if not own_parameters:
        specs = [{k: v for k, v in spec.items() if k not in ("slug", "parameters")} for spec in specs]
    deployment = create_deployment(
        api,
        flow["id"],
        names("deployment"),
        paused=True,
        parameters=DEPLOYMENT_PARAMETERS,
        parameter_openapi_schema=PARAMETERS_SCHEMA,
        schedules=specs,
    )
    slugs = {MORNING["schedule"]["cron"]: MORNING["slug"], EVENING["schedule"]["cron"]: EVENING["slug"]}
    schedules = {
        slugs.get((s.get("schedule") or {}).get("cron"), str(s.get("schedule"))): s
        for s in api.get(f"/deployments/{deployment['id']}/schedules")
    }
    assert set(schedules) == set(slugs.values()), (
        f"GET /deployments/{{id}}/schedules answered {sorted(schedules)}, not the two schedules the deployment was "
        f"created with ({MORNING['schedule']['cron']!r}, {EVENING['schedule']['cron']!r})"
    )
    return deployment, schedules


def runs_by_minute(api: ApiClient, deployment_id: str) -> dict[int, list[dict[str, Any]]]:
    """The deployment's SCHEDULED runs, by the minute of their expected start (15 or 45 here)."""
    by_minute: dict[int, list[dict[str, Any]]] = {}
    for run in scheduled_runs(api, deployment_id):
        at = read_instant(run.get("expected_start_time"), f"expected_start_time of run {run.get('name')!r}")
        by_minute.setdefault(at.minute, []).append(run)
    return by_minute


def test_each_schedule_gives_its_runs_its_parameters_and_slug(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A deployment with two schedules, expanded: each schedule's occurrences, once each, with the deployment's
    parameters overridden by the schedule's own, and ``created_by`` naming the schedule by its slug."""
    deployment, schedules = two_schedule_deployment(api, created, names, own_parameters=True)
    expand_schedules(api, deployment["id"], *WINDOW)
    by_minute = runs_by_minute(api, deployment["id"])
    problems = []
    for minute, spec in ((15, MORNING), (45, EVENING)):
        runs = by_minute.pop(minute, [])
        expected = len(prefect_occurrences(spec["schedule"], *WINDOW))
        if len(runs) != expected:
            problems.append(
                f"schedule {spec['slug']!r} ({spec['schedule']['cron']}): {len(runs)} runs, Prefect makes {expected}"
            )
        want = {**DEPLOYMENT_PARAMETERS, **spec["parameters"]}
        for run in runs[:1] + [r for r in runs[1:] if r.get("parameters") != want][:1]:
            if run.get("parameters") != want:
                problems.append(
                    f"run {run.get('name')!r} of schedule {spec['slug']!r} has parameters "
                    f"{run.get('parameters')!r}, not {want!r} (the schedule's over the deployment's)"
                )
            made_by = run.get("created_by") or {}
            if (made_by.get("type"), made_by.get("id"), made_by.get("display_value")) != (
                "SCHEDULE",
                schedules[spec["slug"]]["id"],
                spec["slug"],
            ):
                problems.append(
                    f"run {run.get('name')!r} of schedule {spec['slug']!r} has created_by {made_by!r}, "
                    f"not the schedule (type SCHEDULE, its id, its slug as display_value)"
                )
    if by_minute:
        problems.append(f"runs at minutes no schedule has: {sorted(by_minute)}")
    assert not problems, (
        f"expanding the two schedules of deployment {deployment['id']} from "
        f"{describe_instant(WINDOW[0])} to {describe_instant(WINDOW[1])}:\n  " + "\n  ".join(problems)
    )


def test_an_inactive_schedule_makes_no_runs_until_activated(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """Of a deployment's two schedules, the one with ``active: false`` makes no runs; once activated
    (``PATCH /deployments/{id}/schedules/{schedule_id}``), it makes its own, and the other's are not made twice."""
    deployment, schedules = two_schedule_deployment(api, created, names, evening_active=False)
    expand_schedules(api, deployment["id"], *WINDOW)
    before = runs_by_minute(api, deployment["id"])
    assert set(before) == {15}, (
        f"with schedule {EVENING['slug']!r} inactive, expanding made runs at minutes {sorted(before)} (counts "
        f"{ {m: len(r) for m, r in before.items()} }); Prefect makes only the active schedule's, at minute 15"
    )
    api.call(
        "PATCH",
        f"/deployments/{deployment['id']}/schedules/{schedules[EVENING['slug']]['id']}",
        json_body={"active": True},
        expect=(200, 204),
        what="activating a schedule failed",
    )
    expand_schedules(api, deployment["id"], *WINDOW)
    after = runs_by_minute(api, deployment["id"])
    counts = {minute: len(runs) for minute, runs in after.items()}
    expected = {
        15: len(prefect_occurrences(MORNING["schedule"], *WINDOW)),
        45: len(prefect_occurrences(EVENING["schedule"], *WINDOW)),
    }
    assert counts == expected, (
        f"once schedule {EVENING['slug']!r} was activated and the deployment expanded again, its runs by minute are "
        f"{counts}, not {expected}: Prefect adds the activated schedule's runs and keeps the other's once each"
    )


def test_deleting_one_schedule_removes_its_runs_and_not_the_others_schedule(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """Of a deployment's two expanded schedules, deleting one removes its SCHEDULED runs, and expanding the deployment
    again makes the other's runs, once each, and none of the deleted one's. (Prefect's ``DELETE`` removes all the
    deployment's auto-scheduled runs not yet started, the other schedule's too, and its scheduler makes the
    remaining schedule's again: ``_delete_scheduled_runs`` in ``api/deployments.py``. A server that removes only the
    deleted schedule's runs gives clients the same runs.)"""
    deployment, schedules = two_schedule_deployment(api, created, names)
    expand_schedules(api, deployment["id"], *WINDOW)
    before = runs_by_minute(api, deployment["id"])
    api.call(
        "DELETE", f"/deployments/{deployment['id']}/schedules/{schedules[EVENING['slug']]['id']}", expect=(200, 204)
    )
    gone = still_scheduled(api, [run["id"] for run in before.get(45, [])])
    expand_schedules(api, deployment["id"], *WINDOW)
    counts = {minute: len(runs) for minute, runs in runs_by_minute(api, deployment["id"]).items()}
    expected = {15: len(prefect_occurrences(MORNING["schedule"], *WINDOW))}
    assert before.get(45) and not gone and counts == expected, (
        f"after DELETE of schedule {EVENING['slug']!r}, {len(gone)} of its {len(before.get(45, []))} SCHEDULED runs "
        f"are still there, and expanding the deployment again gave runs by minute {counts}, not {expected}: the "
        "deleted schedule's runs must go with it, and the remaining schedule's be made once each"
    )
