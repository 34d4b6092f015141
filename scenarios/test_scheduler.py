"""Scheduler: the *target's own* scheduler expands a deployment's cron schedule into SCHEDULED runs.

Behaviour relied on (Prefect 3.9.1 server, ``SchedulerService``): shortly after a deployment with an active
schedule is created (the recent-deployments loop), the server inserts SCHEDULED runs for the schedule's next
occurrences (at least 3 and at least an hour ahead: 61 runs for ``* * * * *``), each with
``expected_start_time == next_scheduled_start_time == state_details.scheduled_time``, and inserts each
occurrence once however many times it loops. The deployment is created through Prefect's real client.

The same expansion on demand (``POST /deployments/{id}/schedule`` over a window) must follow the schedule's time
zone through daylight-saving changes exactly as Prefect computes it: checked against the pinned Prefect's own
schedule classes, with no waiting.

And over time: for schedules from every 10 s to yearly, the scheduler keeps as many runs ahead, as far ahead, as
Prefect's keeps (its limits, or the target author's: ``--scheduler-limits``), and tops the series up as runs fall due
(:mod:`harness.checks.horizon`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from harness.checks.horizon import horizon_problem, scheduler_limits
from harness.checks.objects import Created, create_deployment, create_flow, create_work_pool
from harness.checks.polling import Dataset, assert_sequence, create_run, poll_deployments, poll_pool
from harness.checks.schedules import ZONE, scheduled_runs
from harness.checks.server_times import TargetClock
from harness.checks.timestamps import describe_instant, read_instant, utc_now
from harness.clients.prefect_client import create_cron_deployment
from harness.errors import WaitTimeout
from harness.reference.releases import Release
from harness.target.api import ApiClient
from harness.waits import (
    scheduler_interval,
    stability_window,
    timeout_scale,
    wait_for_instant,
    wait_for_stable,
    wait_until,
)

pytestmark = pytest.mark.scheduler

CRON = "* * * * *"
UPDATED_CRON = "*/2 * * * *"
#: The runs judged are those due within this long of the deployment's creation (the scheduler makes an hour's).
HORIZON = dt.timedelta(minutes=30)


def first_runs_timeout() -> float:
    """How long a new or resumed deployment may wait for its first runs: Prefect schedules them within its
    recent-deployments loop (5 s), a port with one loop within that loop."""
    return max(30.0, 2 * scheduler_interval())


#: The seconds of a minute in which a schedule may change: clear of the pass that tops up a ``* * * * *`` schedule's
#: rolling hour when a minute turns.
MINUTE_QUIET = (5, 50)
#: How overdue the Late-run check's run is when created: past Prefect's default threshold (15 s) and the reference's.
OVERDUE_BY = dt.timedelta(minutes=1)


def recent_window() -> float:
    """How long after a change Prefect's scheduler may still be scheduling a deployment from what it read before:
    its recent-deployments loop (5 s by default, 1 s on the bundled reference; at most the main loop) picks up
    deployments changed within that loop and a second; one second more for a pass in flight."""
    return min(scheduler_interval(), 5.0) + 2.0


def stable_for() -> float:
    """How long the run count must stay unchanged to count as stable (sized by ``--scheduler-interval``)."""
    return stability_window(scheduler_interval())


@dataclass
class ScheduleOutcome:
    deployment_id: str
    created_at: dt.datetime
    #: A second ``* * * * *`` deployment, created paused at the same time: the scheduler must leave it alone.
    paused_deployment_id: str
    #: A run of a work-pool deployment, created a minute overdue at the same time: the server must mark it Late.
    overdue: Dataset
    overdue_pool: str
    #: A third ``* * * * *`` deployment whose schedule becomes ``*/2 * * * *`` once the scheduler is running.
    updated_deployment_id: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    failure: AssertionError | None = None
    #: When the target had answered the schedule change: runs due later must be the new schedule's.
    schedule_changed_at: dt.datetime | None = None

    def require_runs(self) -> list[dict[str, Any]]:
        """The runs, or the failure that prevented observing them (re-raised with its kind)."""
        if self.failure is not None:
            raise self.failure
        return self.runs


@pytest.fixture(scope="module")
def scheduled(
    target,
    api: ApiClient,
    module_names: Callable[..., str],
    module_created: Created,
    client_release: Release,
    horizon: Horizon,
) -> ScheduleOutcome:
    """Create a ``* * * * *`` deployment, wait for its first runs, then until their number stops changing.

    A paused twin and a deployment whose schedule is changed once the first runs exist are created first, so the
    scheduler has looped over all three by the time the count holds still. The horizon checks' deployments come
    first of all (``horizon``): their waits then overlap these."""
    flow_name = module_names("flow")
    created_at = utc_now()
    paused_flow = create_flow(api, module_created, module_names("paused-flow"))
    paused = create_deployment(
        api,
        paused_flow["id"],
        module_names("paused-deployment"),
        paused=True,
        schedules=[{"schedule": {"cron": CRON, "timezone": "UTC"}, "active": True}],
    )
    pool = create_work_pool(api, module_created, module_names("late-pool"))
    late_deployment = create_deployment(
        api, paused_flow["id"], module_names("late-deployment"), work_pool_name=pool["name"]
    )
    overdue = Dataset(created_at - OVERDUE_BY)
    overdue.add(create_run(api, late_deployment["id"], module_names("overdue"), overdue.t0), "overdue", overdue.t0)
    updated = create_deployment(
        api,
        paused_flow["id"],
        module_names("updated-deployment"),
        schedules=[{"schedule": {"cron": CRON, "timezone": "UTC"}, "active": True}],
    )
    updated_at = utc_now()
    deployment_id = create_cron_deployment(target.api_url, flow_name, module_names("deployment"), CRON, client_release)
    outcome = ScheduleOutcome(deployment_id, created_at, paused["id"], overdue, pool["name"], updated["id"])
    flow = api.get(f"/deployments/{deployment_id}")["flow_id"]
    module_created.add(f"/flows/{flow}")
    try:
        wait_until(
            lambda: scheduled_runs(api, deployment_id),
            awaiting=f"the target's scheduler to create SCHEDULED runs for a deployment with cron {CRON!r}",
            timeout=first_runs_timeout(),
            interval=0.5,
            hint="the server's scheduler service must expand active schedules into runs on its own; no client "
            "creates them (Prefect does it within its recent-deployments loop, 5 s by default)",
        )
        # Changed while the scheduler runs, but not while a pass that read the old schedule may still be inserting
        # its runs: Prefect's recent-deployments loop re-reads a deployment for a loop and a second after it
        # changed, and a pass in flight at the change inserts the old schedule's runs after they were deleted
        # (seen once on the reference: every odd minute of the next hour kept). The scheduler's own runs first.
        wait_until(
            lambda: scheduled_runs(api, updated["id"]),
            awaiting=f"the target's scheduler to create runs for a second deployment with cron {CRON!r}",
            timeout=first_runs_timeout(),
            interval=0.5,
            hint="every active schedule is expanded into runs, whichever client created the deployment",
        )
        settled = updated_at + dt.timedelta(seconds=recent_window())
        wait_for_instant(
            settled,
            awaiting=f"{recent_window():.0f} s after that deployment was created (the "
            "scheduler's recent-deployments window), before its schedule changes",
        )
        # Nor at the turn of a minute: the scheduler then tops the rolling hour up by a run, in a pass that read the
        # old schedule, and a change landing in that pass is undone by it. Such a pass is over within seconds.
        wait_until(
            lambda: MINUTE_QUIET[0] <= utc_now().second < MINUTE_QUIET[1],
            awaiting=f"a second between {MINUTE_QUIET[0]} and {MINUTE_QUIET[1]} of the minute, away from the "
            "scheduler's top-up at its turn",
            timeout=15,
            interval=0.2,
        )
        (schedule,) = api.get(f"/deployments/{updated['id']}/schedules")
        api.call(
            "PATCH",
            f"/deployments/{updated['id']}/schedules/{schedule['id']}",
            expect=(200, 204),
            json_body={"schedule": {"cron": UPDATED_CRON, "timezone": "UTC"}},
            what="changing a deployment's schedule failed",
        )
        outcome.schedule_changed_at = utc_now()
        # Within a fixed horizon: the scheduler keeps a rolling hour of runs ahead, so the total grows every minute,
        # while the runs of the horizon's minutes change only if the scheduler duplicates or drops some.
        horizon = created_at + HORIZON
        outcome.runs = wait_for_stable(
            lambda: scheduled_runs(api, deployment_id, before=horizon),
            awaiting=f"the number of scheduled runs due before {describe_instant(horizon)}",
            stable_for=stable_for(),
            timeout=first_runs_timeout(),
            hint="the count must hold still for one scheduler loop and 3 s (--scheduler-interval; 60 s by default "
            "against a --target); one that keeps changing means the scheduler keeps adding or removing those runs",
        )
    except AssertionError as exc:
        outcome.failure = exc
    return outcome


def test_scheduler_creates_runs(scheduled: ScheduleOutcome) -> None:
    """The target's scheduler creates SCHEDULED runs for an active cron schedule (at least Prefect's minimum of 3)."""
    assert len(scheduled.require_runs()) >= 3, (
        f"the scheduler created only {len(scheduled.runs)} runs; Prefect creates at least 3"
    )


def test_runs_fall_on_cron_boundaries(scheduled: ScheduleOutcome) -> None:
    """Runs of ``* * * * *`` start on whole minutes, one minute apart, from the first minute after creation."""
    times = [
        read_instant(r.get("expected_start_time"), f"expected_start_time of run {r.get('name')!r}")
        for r in scheduled.require_runs()
    ]
    off_boundary = [describe_instant(t) for t in times if t.second or t.microsecond]
    assert not off_boundary, f"runs of cron {CRON!r} not on a minute boundary: {off_boundary[:5]}"
    gaps = {(b - a).total_seconds() for a, b in zip(times, times[1:])}
    assert gaps <= {60.0}, f"runs of cron {CRON!r} should be 60 s apart; found gaps of {sorted(gaps)} s"
    first = times[0]
    assert scheduled.created_at - dt.timedelta(minutes=1) <= first <= scheduled.created_at + dt.timedelta(minutes=2), (
        f"the first run starts at {describe_instant(first)}, the deployment was created at "
        f"{describe_instant(scheduled.created_at)}; expected the next minute boundary"
    )


def test_scheduled_run_times_agree(scheduled: ScheduleOutcome) -> None:
    """Each run's expected_start_time, next_scheduled_start_time and state_details.scheduled_time are one instant."""
    for run in scheduled.require_runs():
        values = {
            "expected_start_time": run.get("expected_start_time"),
            "next_scheduled_start_time": run.get("next_scheduled_start_time"),
            "state.state_details.scheduled_time": ((run.get("state") or {}).get("state_details") or {}).get(
                "scheduled_time"
            ),
        }
        missing = [k for k, v in values.items() if not v]
        assert not missing, f"run {run['name']!r} created by the scheduler has no {', '.join(missing)}: {values}"
        instants = {read_instant(v, f"{k} of run {run.get('name')!r}") for k, v in values.items()}
        assert len(instants) == 1, f"run {run['name']!r} created by the scheduler disagrees with itself: {values}"


def test_late_runs_stay_scheduled_and_are_handed_out(scheduled: ScheduleOutcome, api: ApiClient) -> None:
    """A run a minute overdue is marked ``Late`` by the server, stays SCHEDULED-type with its
    next_scheduled_start_time, and both polling endpoints still hand it out (a worker or Runner starts it late)."""
    (run_id,) = scheduled.overdue.labels

    def marked_late() -> dict[str, Any] | None:
        run = api.get(f"/flow_runs/{run_id}")
        return run if (run.get("state") or {}).get("name") == "Late" else None

    run = wait_until(
        marked_late,
        awaiting=f"the server to mark run {run_id}, due {describe_instant(scheduled.overdue.t0)}, Late",
        timeout=first_runs_timeout(),
        interval=0.5,
        hint="Prefect's late-runs service renames overdue SCHEDULED runs Late (15 s overdue, every 5 s by default)",
    )
    assert run["state"].get("type") == "SCHEDULED", (
        f"the Late run's state type is {run['state'].get('type')!r}, expected SCHEDULED"
    )
    entries = scheduled.overdue.entries([run])
    assert entries == scheduled.overdue.expected(["overdue"]), (
        f"the Late run's next_scheduled_start_time is {run.get('next_scheduled_start_time')!r}; it must keep its "
        f"scheduled time {describe_instant(scheduled.overdue.t0)}"
    )
    now = describe_instant(utc_now())
    assert_sequence(
        "POST /deployments/get_scheduled_flow_runs of the deployment with the Late run",
        entries,
        scheduled.overdue.entries(poll_deployments(api, [run["deployment_id"]], scheduled_before=now)),
    )
    assert_sequence(
        "POST /work_pools/{name}/get_scheduled_flow_runs of the pool with the Late run",
        entries,
        scheduled.overdue.entries(poll_pool(api, scheduled.overdue_pool, scheduled_before=now)),
    )


def test_schedule_change_replaces_the_runs_without_duplicates(scheduled: ScheduleOutcome, api: ApiClient) -> None:
    """A deployment's ``* * * * *`` schedule changed to ``*/2 * * * *`` while the scheduler runs: its SCHEDULED runs
    due after the change are the new schedule's (even minutes), each occurrence once. (Prefect deletes only the
    auto-scheduled runs not yet due; one already due stays.)"""
    scheduled.require_runs()  # the scheduler works at all, and has looped since the change
    changed_at = scheduled.schedule_changed_at
    runs = scheduled_runs(api, scheduled.updated_deployment_id)
    times = [read_instant(r.get("expected_start_time"), f"expected_start_time of run {r.get('name')!r}") for r in runs]
    later = [t for t in times if t > changed_at]
    assert len(later) >= 3, (
        f"after the schedule change at {describe_instant(changed_at)} the deployment has {len(later)} SCHEDULED runs "
        "due later; Prefect makes at least 3"
    )
    stale = [describe_instant(t) for t in later if t.minute % 2 or t.second or t.microsecond]
    assert not stale, (
        f"{len(stale)} of the {len(later)} SCHEDULED runs due after the change at {describe_instant(changed_at)} are "
        f"not on the new schedule {UPDATED_CRON!r}, e.g. {stale[:3]}: runs of the replaced schedule were kept. Prefect "
        "deletes a deployment's auto-scheduled runs not yet due when its schedule changes, and schedules the new one"
    )
    repeated = sorted({describe_instant(t) for t in times if times.count(t) > 1})
    assert not repeated, f"occurrences scheduled more than once after the schedule change: {repeated[:3]}"


def test_paused_deployment_gets_no_runs_until_resumed(scheduled: ScheduleOutcome, api: ApiClient) -> None:
    """While the scheduler expanded its active twin, a paused deployment got no runs; resumed, it gets them."""
    scheduled.require_runs()  # the scheduler works at all, and has looped over both deployments
    runs = scheduled_runs(api, scheduled.paused_deployment_id)
    assert not runs, (
        f"the scheduler created {len(runs)} runs for a paused deployment (e.g. {runs[0].get('name')!r} at "
        f"{runs[0].get('expected_start_time')}); Prefect schedules no runs for a paused deployment"
    )
    api.call(
        "PATCH",
        f"/deployments/{scheduled.paused_deployment_id}",
        {"paused": False},
        expect=(200, 204),
        what="resuming the deployment failed",
    )
    wait_until(
        lambda: scheduled_runs(api, scheduled.paused_deployment_id),
        awaiting="the target's scheduler to create runs for the deployment once it was resumed",
        timeout=first_runs_timeout(),
        interval=0.5,
        hint="resuming a deployment (PATCH paused=false) must bring its schedule back into the scheduler's loop",
    )


def test_no_duplicate_runs(scheduled: ScheduleOutcome) -> None:
    """Each cron occurrence is scheduled once, however many times the scheduler loops."""
    by_time: dict[dt.datetime, list[str]] = {}
    for run in scheduled.require_runs():
        when = read_instant(run.get("expected_start_time"), f"expected_start_time of run {run.get('name')!r}")
        by_time.setdefault(when, []).append(run["name"])
    duplicated = {describe_instant(t): names for t, names in by_time.items() if len(names) > 1}
    assert not duplicated, (
        f"{len(duplicated)} occurrences were scheduled more than once: {dict(list(duplicated.items())[:3])}"
    )


# --- the horizon: as many runs as Prefect keeps ahead, as far ahead, topped up as they fall due ---------------------

#: name -> the schedule, from the deployment's creation (``created``): frequencies whose runs different limits end.
#: Every 10 s reaches max_runs before min_scheduled_time; every minute runs until min_scheduled_time; hourly, daily,
#: weekly and monthly stop at min_runs; a yearly date 60 days ahead gives one run and one 150 days ahead none
#: (max_scheduled_time, 100 days).
HORIZON_CASES: dict[str, Callable[[dt.datetime], dict[str, Any]]] = {
    "every-10-seconds": lambda created: {"interval": 10, "anchor_date": "2026-01-01T00:00:00Z", "timezone": "UTC"},
    "every-minute": lambda created: {"cron": "* * * * *", "timezone": "UTC"},
    "hourly": lambda created: {"cron": "0 * * * *", "timezone": "UTC"},
    "daily": lambda created: {"interval": 86400, "anchor_date": "2026-01-01T06:30:00Z", "timezone": "UTC"},
    "weekly": lambda created: {"cron": "0 9 * * 1", "timezone": ZONE},
    "monthly": lambda created: {"rrule": "DTSTART:20260101T120000\nRRULE:FREQ=MONTHLY", "timezone": "UTC"},
    "yearly-60-days-ahead": lambda created: yearly_on(created + dt.timedelta(days=60)),
    "yearly-150-days-ahead": lambda created: yearly_on(created + dt.timedelta(days=150)),
}
#: How long after its creation a deployment is looked at a second time, beyond the lag a pass may have: the
#: every-10-seconds schedule has had a run fall due by then, which the scheduler must have replaced by a new last one.
TOP_UP_AFTER = dt.timedelta(seconds=12)


def yearly_on(day: dt.datetime) -> dict[str, Any]:
    return {"cron": f"0 12 {day.day} {day.month} *", "timezone": "UTC"}


def pass_lag() -> dt.timedelta:
    """How old the scheduler's latest pass over a schedule that needs runs may be: two of its loops
    (``--scheduler-interval``) and 10 s for a pass in flight on a loaded server, scaled like every wait."""
    return dt.timedelta(seconds=(2 * scheduler_interval() + 10.0) * timeout_scale())


@dataclass
class Horizon:
    #: case -> (deployment id, its schedule, when it was created by the harness's clock)
    deployments: dict[str, tuple[str, dict[str, Any], dt.datetime]]


@pytest.fixture(scope="module")
def horizon(api: ApiClient, module_names: Callable[..., str], module_created: Created) -> Horizon:
    """One deployment per :data:`HORIZON_CASES` schedule, active, created together (one flow: deleting it at the
    end deletes them and their runs)."""
    flow = create_flow(api, module_created, module_names("horizon-flow"))
    deployments = {}
    for case, make in HORIZON_CASES.items():
        created_at = utc_now()
        schedule = make(created_at)
        deployment = create_deployment(
            api, flow["id"], module_names(f"horizon-{case}"), schedules=[{"schedule": schedule, "active": True}]
        )
        deployments[case] = (deployment["id"], schedule, created_at)
    return Horizon(deployments)


@pytest.mark.parametrize("case", HORIZON_CASES)
def test_scheduler_keeps_prefects_horizon(
    case: str, horizon: Horizon, api: ApiClient, target_clock: TargetClock
) -> None:
    """A deployment with one active {case} schedule: the target's own scheduler keeps exactly the runs Prefect's
    keeps ahead (at least min_runs and until min_scheduled_time ahead, at most max_runs and never beyond
    max_scheduled_time: ``--scheduler-limits``, Prefect's by default), each occurrence once and none due before the
    deployment existed; looked at again once runs have fallen due, the series has been topped up, without duplicates."""
    deployment_id, schedule, created_at = horizon.deployments[case]
    limits, lag = scheduler_limits(), pass_lag()
    shift = dt.timedelta(seconds=target_clock.offset)  # the scheduler's "now" is the target's clock
    tolerance = dt.timedelta(seconds=target_clock.uncertainty + 1.0)
    last: dict[str, str] = {}

    def judged() -> dt.datetime:
        observed = utc_now()
        runs = scheduled_runs(api, deployment_id)
        times = [
            read_instant(r.get("expected_start_time"), f"expected_start_time of run {r.get('name')!r}") for r in runs
        ]
        problem = horizon_problem(
            schedule,
            times,
            created=created_at + shift,
            observed=observed + shift,
            limits=limits,
            lag=lag,
            tolerance=tolerance,
        )
        if problem:
            last["problem"] = problem
            raise AssertionError(problem)
        return observed

    what = f"the SCHEDULED runs of deployment {deployment_id} with schedule {schedule}"
    # From the deployment's creation, so that the cases created with it and looked at after it do not each wait anew.
    deadline = created_at + dt.timedelta(seconds=first_runs_timeout() * timeout_scale()) + lag
    try:
        first_look = wait_until(
            judged,
            awaiting=f"{what} to be those Prefect's scheduler keeps",
            interval=0.5,
            timeout=max(1.0, (deadline - utc_now()).total_seconds()) / timeout_scale(),
        )
    except WaitTimeout:
        raise AssertionError(f"{what}, created at {describe_instant(created_at)}: {last['problem']}") from None
    topped_up_by = created_at + lag + TOP_UP_AFTER
    if first_look >= topped_up_by:
        return  # looked at once runs had fallen due already (the cases created with it took the time)
    second_look = max(first_look + dt.timedelta(seconds=stable_for()), topped_up_by)
    wait_for_instant(
        second_look, awaiting=f"{describe_instant(second_look)}, to look at {what} again once runs have fallen due"
    )
    try:
        judged()
    except AssertionError as exc:
        raise AssertionError(
            f"{what}, created at {describe_instant(created_at)}, looked at again once runs had fallen due: {exc}"
        ) from None
