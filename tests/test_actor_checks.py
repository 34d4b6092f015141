"""The serve, worker, task worker and scheduler checks pass on the reference and fail on targets that get those paths
wrong.

The distinction between serve and worker must cut both ways: a target without the work-pool polling endpoint
fails the worker checks while the serve checks pass, and the reverse.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Callable

import httpx
import pytest

from harness.checks.timestamps import describe_instant, parse_instant
from harness.reference.local import LocalReference
from harness.waits import SCHEDULER_INTERVAL_ENV
from scenarios.test_scheduler import HORIZON_CASES
from scenarios.test_scheduler__expansion import CALENDAR_CASES, INTERVAL_CASES
from tests.conftest import SCHEDULED_RUNNER_CHECKS, SuiteRun
from tests.conftest import DeviationCase as Case
from tests.deviations.framework import (
    AcceptsWithout,
    IgnoresDeletes,
    Refuses,
    RewritesJson,
    RewritesObjects,
    RewritesPolls,
    RewritesRuns,
    RewritesScheduleEntries,
    RewritesSchedules,
    Together,
)
from tests.deviations.labels import KeepsOwnLabelsOnly, LacksSystemLabels
from tests.deviations.lifecycle import (
    IgnoresCancellation,
    IgnoresLimits,
    LacksLifecycleServices,
    LacksPendingGuard,
    LacksTaskRunRecorder,
    MakesFailuresFinal,
    RefusesCrashed,
    RefusesResume,
)
from tests.deviations.lists import CountsOneMore, IgnoresOffset, IgnoresRelatedFilters, SortsTimesAsStrings
from tests.deviations.scheduler import first_pass_only, horizon_of, interval_schedules
from tests.deviations.scheduling import AnswersEmptyPolls, skip_late
from tests.deviations.schema import epoch_created
from tests.deviations.statuses import EndsPausesOnActivity, ReportsAlwaysReady
from tests.deviations.upserts import AlwaysCreates, ReplacesSchedules, StartsUpsertsOver, ignores_idempotency

POOL_POLL = r"/work_pools/[^/]+/get_scheduled_flow_runs$"
DEPLOYMENT_POLL = r"/deployments/get_scheduled_flow_runs$"


def shift_schedule(seconds: int) -> Callable[[dict], dict]:
    """A scheduler that ignores the cron's boundaries: every time of the run moves by ``seconds``."""

    def fn(run: dict) -> dict:
        if not run.get("auto_scheduled"):
            return run
        delta = dt.timedelta(seconds=seconds)
        for holder, key in (
            (run, "expected_start_time"),
            (run, "next_scheduled_start_time"),
            ((run.get("state") or {}).get("state_details") or {}, "scheduled_time"),
        ):
            if holder.get(key):
                holder[key] = describe_instant(parse_instant(holder[key]) + delta)
        return run

    return fn


def standard_time_all_year(run: dict) -> dict:
    """A scheduler that expands New York schedules at a fixed UTC-5: a run in daylight-saving time comes an hour
    late."""
    from zoneinfo import ZoneInfo

    if not run.get("auto_scheduled") or not run.get("expected_start_time"):
        return run
    if not parse_instant(run["expected_start_time"]).astimezone(ZoneInfo("America/New_York")).dst():
        return run
    return shift_schedule(3600)(run)


def duplicate_auto_scheduled(run: dict) -> dict | list[dict]:
    """A scheduler that inserts each occurrence again on its next loop."""
    if not run.get("auto_scheduled") or (run.get("state") or {}).get("type") != "SCHEDULED":
        return run
    return [run, {**run, "id": str(uuid.uuid4()), "name": run["name"] + "-again"}]


def without(*keys: str) -> Callable[[dict], dict]:
    return lambda run: {**run, **{k: None for k in keys}}


def with_worker_labels(run: dict) -> dict:
    return {**run, "labels": {**(run.get("labels") or {}), "prefect.worker.name": "someone-else"}}


#: The interval cases whose runs keep a local wall time across a daylight-saving change (a day or a week long, in
#: a zone that has one): a server that computes them in UTC fails these and no others.
LOCAL_TIME_CASES = (
    "daily-0900-new-york-spring-forward",
    "daily-0900-new-york-fall-back",
    "weekly-sydney-april",
    "weekly-sydney-october",
)

#: For a case about the runs the scheduler makes for the cron deployment: the checks on that deployment only.
CRON_DEPLOYMENT_ONLY = ("-k", "scheduler_creates_runs or runs_fall_on or scheduled_run_times or no_duplicate_runs")

#: For a case whose checks need only the unscheduled Runner.
#: The objects the lists checks page through.
LISTED_KINDS = ("flows", "flow_runs", "task_runs", "deployments", "work_pools")
UNSCHEDULED_RUNNER_ONLY = ("-k", f"not ({SCHEDULED_RUNNER_CHECKS})")

CASES = [
    Case(
        "answers-with-epoch-created",
        lambda: RewritesObjects(epoch_created),
        {
            "serve/answers_the_runner_got_match_prefects_schema",
            "worker/answers_the_worker_got_match_prefects_schema",
            "task_worker/answers_the_task_clients_got_match_prefects_schema",
        },
        r"\d+ of the \d+ answers the .* got break Prefect 3\.9\.1's schema: .*\$\S*\.created: expected type string, "
        r"got 1764316800",
        markers="serve or worker or task_worker",
        args=("-k", "answers_the"),
    ),
    Case(
        "no-work-pool-polling-endpoint",
        lambda: Refuses("POST", POOL_POLL),
        {"worker/worker_polls_work_pool_endpoint", "worker/worker_run_completes"},
        r"POST /work_pools/\S+/get_scheduled_flow_runs",
        markers="serve or worker",
        passes={
            "serve/runner_polls_deployments_endpoint",
            "serve/served_run_completes",
            "worker/worker_registers_with_its_pool",
        },
        args=UNSCHEDULED_RUNNER_ONLY,
    ),
    Case(
        "no-deployments-polling-endpoint",
        lambda: Refuses("POST", DEPLOYMENT_POLL),
        {
            "serve/runner_polls_deployments_endpoint",
            "serve/served_run_completes",
            "serve/runner_executes_server_scheduled_runs",
        },
        r"POST /deployments/get_scheduled_flow_runs",
        markers="serve or worker",
        passes={"worker/worker_polls_work_pool_endpoint", "worker/worker_run_completes"},
    ),
    Case(
        "polls-never-return-runs",
        AnswersEmptyPolls,
        {"serve/served_run_completes", "worker/worker_run_completes"},
        r"Timed out .* waiting for flow run \S+ to be executed .* run is SCHEDULED",
        markers="serve or worker",
        passes={"serve/runner_polls_deployments_endpoint", "worker/worker_polls_work_pool_endpoint"},
        args=("--timeout-scale", "0.5", "-n", "2", *UNSCHEDULED_RUNNER_ONLY),
        long=True,
    ),
    Case(
        "worker-cannot-register",
        lambda: Refuses("POST", r"/workers/heartbeat$", websocket_path=r"/workers/connect$"),
        {"worker/worker_registers_with_its_pool"},
        r"is not registered with pool .* The worker tried: WS /work_pools/\S+/workers/connect -> 403, "
        r"POST /work_pools/\S+/workers/heartbeat -> 404",
        markers="worker",
    ),
    Case(
        "worker-heartbeat-frozen-and-offline",
        lambda: RewritesJson(
            "POST",
            r"/workers/filter$",
            lambda workers: [
                {**w, "last_heartbeat_time": "2026-11-01T00:00:00Z", "status": "OFFLINE"} for w in workers
            ],
        ),
        {"worker/worker_stays_online_with_a_moving_heartbeat"},
        r"is listed with status 'OFFLINE' while it heartbeats \(in all \d+ listings .*\['OFFLINE'\]\).*; and the "
        r"worker's last_heartbeat_time did not move in \d+ s .* seen \['2026-11-01T00:00:00Z'\]",
        markers="worker",
        passes={"worker/worker_registers_with_its_pool", "worker/worker_run_completes"},
    ),
    Case(
        "worker-run-loses-labels-and-pid",
        lambda: RewritesRuns(without("labels", "infrastructure_pid", "work_pool_name")),
        {"worker/worker_run_carries_pool_and_worker_labels", "worker/worker_runs_flow_in_a_new_process"},
        r"should carry|no infrastructure_pid",
        markers="worker",
        passes={"worker/worker_polls_work_pool_endpoint"},
    ),
    Case(
        "served-run-looks-like-a-worker-run",
        lambda: RewritesRuns(with_worker_labels),
        {"serve/served_run_is_not_a_worker_run"},
        r"looks like a worker ran it: label prefect.worker.name",
        markers="serve",
        passes={"serve/served_run_completes"},
        args=UNSCHEDULED_RUNNER_ONLY,
    ),
    Case(
        "served-deployment-bound-to-a-pool",
        lambda: RewritesJson("GET", r"/deployments/name/", lambda d: {**d, "work_pool_name": "default-agent-pool"}),
        {"serve/served_deployment_has_no_work_pool"},
        r"has work_pool_name 'default-agent-pool'",
        markers="serve",
        args=UNSCHEDULED_RUNNER_ONLY,
    ),
    Case(
        "schedule-not-attached",
        lambda: RewritesJson("GET", r"/deployments/[0-9a-f-]{36}/schedules$", lambda d: []),
        {"serve/served_deployment_has_its_schedule"},
        r"should have one active schedule with interval 1",
        markers="serve",
        args=("-k", SCHEDULED_RUNNER_CHECKS),
    ),
    Case(
        "no-task-run-subscription",
        lambda: Refuses("NONE", r"^$", websocket_path=r"/task_runs/subscriptions/scheduled$"),
        {
            "task_worker/task_worker_subscribes_over_the_websocket",
            "task_worker/task_worker_never_polls_for_flow_runs",
            "task_worker/delayed_task_runs_complete_with_results_for_the_submitter",
            "task_worker/each_delayed_task_run_executes_exactly_once",
        },
        r"WS /task_runs/subscriptions/scheduled.* with 403",
        markers="task_worker",
        unsupported=True,
    ),
    Case(
        "task-run-events-refused",
        lambda: Refuses("NONE", r"^$", websocket_path=r"/events/in$"),
        {
            "task_worker/delayed_task_runs_complete_with_results_for_the_submitter",
            "task_worker/each_delayed_task_run_executes_exactly_once",
        },
        r"future.result\(\) calls gave .*TimeoutError.*Hint: the task worker reports|run_count of the delayed task "
        r"runs .*: 0",
        markers="task_worker",
        passes={
            "task_worker/task_worker_subscribes_over_the_websocket",
            "task_worker/task_worker_never_polls_for_flow_runs",
        },
        args=("--timeout-scale", "0.25"),
    ),
    Case(
        "task-runs-not-counted",
        lambda: RewritesJson("POST", r"/task_runs/filter$", lambda runs: [{**run, "run_count": 0} for run in runs]),
        {"task_worker/each_delayed_task_run_executes_exactly_once"},
        r"run_count of the delayed task runs as the target returns them: .*: 0",
        markers="task_worker",
        passes={"task_worker/delayed_task_runs_complete_with_results_for_the_submitter"},
    ),
    Case(
        "scheduler-ignores-cron-boundaries",
        lambda: RewritesRuns(shift_schedule(17)),
        {"scheduler/runs_fall_on_cron_boundaries"},
        r"not on a minute boundary",
        markers="scheduler",
        passes={
            "scheduler/scheduled_run_times_agree",
            "scheduler/no_duplicate_runs",
            "scheduler/scheduler_creates_runs",
        },
        args=CRON_DEPLOYMENT_ONLY,
    ),
    Case(
        "schedule-ignores-daylight-saving",
        lambda: RewritesRuns(standard_time_all_year),
        {
            f"scheduler/schedule_follows_daylight_saving_time[{kind}-{transition}]"
            for kind in ("cron-hourly", "cron-daily-0130", "rrule-daily-0130")
            for transition in ("spring-forward", "fall-back")
        },
        r"first difference at position \d+ .*\n\s+expected .*EDT@.*\n\s+actual ",
        markers="scheduler",
        args=("-k", "daylight_saving"),
        diagnosis="A schedule's daylight saving time ignored",
    ),
    Case(
        "interval-anchor-ignored",
        lambda: interval_schedules(lambda s: {**s, "anchor_date": "2027-01-01T00:00:00Z"}),
        {f"scheduler/interval_schedule_expands_as_prefect_does[{case}]" for case in INTERVAL_CASES},
        r"runs of \{'interval': .*first difference at position \d+ .*\n\s+expected .*\n\s+actual ",
        markers="scheduler",
        args=("-k", "interval_schedule"),
    ),
    Case(
        "interval-time-zone-ignored",
        lambda: interval_schedules(lambda s: {**s, "timezone": "UTC"}),
        {f"scheduler/interval_schedule_expands_as_prefect_does[{case}]" for case in LOCAL_TIME_CASES},
        r"wall clock in (America/New_York|Australia/Sydney)\): first difference at position \d+ .*\n\s+expected .*"
        r"(EDT|EST|AEST|AEDT)@",
        markers="scheduler",
        passes={f"scheduler/interval_schedule_expands_as_prefect_does[{case}]" for case in INTERVAL_CASES}
        - {f"scheduler/interval_schedule_expands_as_prefect_does[{case}]" for case in LOCAL_TIME_CASES},
        args=("-k", "interval_schedule"),
        diagnosis="A schedule's daylight saving time ignored",
    ),
    Case(
        "interval-anchor-without-microseconds",
        lambda: interval_schedules(lambda s: {**s, "anchor_date": re.sub(r"\.\d+", "", s.get("anchor_date", ""))}),
        {
            "scheduler/interval_schedule_expands_as_prefect_does[every-7-minutes-anchored-in-the-future-with-microseconds]",
            "scheduler/interval_schedule_expands_as_prefect_does[every-90-minutes-anchored-at-plus-05-30]",
        },
        r"first difference at position 0 .*\n\s+expected \[[\d-]+ [\d:]+\.(123456|500000)UTC@",
        markers="scheduler",
        passes={
            "scheduler/interval_schedule_expands_as_prefect_does[every-30-seconds-anchored-in-the-past]",
            "scheduler/interval_schedule_expands_as_prefect_does[daily-0900-new-york-fall-back]",
        },
        args=("-k", "interval_schedule"),
    ),
    Case(
        "calendar-schedules-in-the-servers-own-zone",
        lambda: RewritesSchedules(lambda s: {**s, "timezone": "Asia/Kathmandu"} if "interval" not in s else s),
        {f"scheduler/calendar_schedule_expands_as_prefect_does[{case}]" for case in CALENDAR_CASES},
        r"runs of \{'(cron|rrule)': .*first difference at position \d+ .*\n\s+expected .*\n\s+actual ",
        markers="scheduler",
        args=("-k", "calendar_schedule"),
    ),
    Case(
        "cron-day-or-inverted",
        lambda: RewritesSchedules(lambda s: {**s, "day_or": not s["day_or"]} if "day_or" in s else s),
        {
            f"scheduler/calendar_schedule_expands_as_prefect_does[{case}]"
            for case in ("cron-day-of-month-or-weekday", "cron-day-of-month-and-weekday")
        },
        r"\{'cron': '0 9 13 \* 5', .*'day_or': (True|False)\}.*first difference",
        markers="scheduler",
        passes={
            "scheduler/calendar_schedule_expands_as_prefect_does[cron-steps-and-ranges]",
            "scheduler/calendar_schedule_expands_as_prefect_does[rrule-count]",
        },
        args=("-k", "calendar_schedule and (weekday or steps or count)"),
    ),
    Case(
        "rrule-only-freq-and-dtstart",
        lambda: RewritesSchedules(
            lambda s: (
                {
                    **s,
                    "rrule": "\n".join(
                        re.sub(r";(COUNT|UNTIL|BYSETPOS|BYDAY)=[^;\n]*", "", line)
                        for line in s["rrule"].split("\n")
                        if not line.startswith(("EXDATE", "RDATE"))
                    ),
                }
                if "rrule" in s
                else s
            )
        ),
        {
            f"scheduler/calendar_schedule_expands_as_prefect_does[{case}]"
            for case in ("rrule-count", "rrule-until", "rrule-exdate-and-rdate", "rrule-last-weekday-of-the-month")
        },
        r"\{'rrule': .*first difference at position \d+ \(expected \d+ runs, got \d+\)",
        markers="scheduler",
        passes={"scheduler/calendar_schedule_expands_as_prefect_does[cron-hourly-macro]"},
        args=("-k", "calendar_schedule and (rrule or hourly)"),
    ),
    Case(
        "schedule-parameters-and-slug-ignored",
        lambda: RewritesScheduleEntries(lambda e: {k: v for k, v in e.items() if k not in ("parameters", "slug")}),
        {"scheduler/each_schedule_gives_its_runs_its_parameters_and_slug"},
        r"has parameters \{'a': 'from-deployment', 'b': 'from-deployment'\}, not .*has created_by .*'display_value': "
        r"'CronSchedule'",
        markers="scheduler",
        passes={"scheduler/an_inactive_schedule_makes_no_runs_until_activated"},
        args=("-k", "each_schedule or inactive_schedule"),
    ),
    Case(
        "inactive-schedules-expanded",
        lambda: RewritesScheduleEntries(lambda e: {**e, "active": True}),
        {"scheduler/an_inactive_schedule_makes_no_runs_until_activated"},
        r"with schedule 'quarter-to' inactive, expanding made runs at minutes \[15, 45\]",
        markers="scheduler",
        passes={"scheduler/each_schedule_gives_its_runs_its_parameters_and_slug"},
        args=("-k", "each_schedule or inactive_schedule"),
    ),
    Case(
        "schedule-change-ignored",
        lambda: AcceptsWithout("PATCH", r"/deployments/[0-9a-f-]{36}/schedules/[0-9a-f-]{36}$", "schedule"),
        {"scheduler/schedule_change_replaces_the_runs_without_duplicates"},
        r"are not on the new schedule '\*/2 \* \* \* \*'",
        markers="scheduler",
        passes={"scheduler/scheduler_creates_runs"},
        args=("-k", "schedule_change or scheduler_creates_runs"),
    ),
    Case(
        "polls-skip-late-runs",
        lambda: RewritesPolls(skip_late, pools=True, deployments=True),
        {"scheduler/late_runs_stay_scheduled_and_are_handed_out"},
        r"get_scheduled_flow_runs of the (deployment|pool) with the Late run: first difference at position 0",
        markers="scheduler",
        passes={"scheduler/scheduler_creates_runs"},
        args=("-k", "late_runs or scheduler_creates_runs"),
    ),
    Case(
        "paused-deployment-scheduled-anyway",
        lambda: AcceptsWithout("POST", r"/deployments/$", "paused"),
        {"scheduler/paused_deployment_gets_no_runs_until_resumed"},
        r"the scheduler created \d+ runs for a paused deployment",
        markers="scheduler",
        passes={"scheduler/scheduler_creates_runs"},
        args=("-k", "paused_deployment or scheduler_creates_runs"),
    ),
    Case(
        "deletes-leave-scheduled-runs",
        lambda: IgnoresDeletes(r"/deployments/[0-9a-f-]{36}(/schedules/[0-9a-f-]{36})?$"),
        {
            "scheduler/deleting_a_schedule_removes_its_scheduled_runs",
            "scheduler/deleting_a_deployment_leaves_no_scheduled_runs",
            "scheduler/deleting_one_schedule_removes_its_runs_and_not_the_others_schedule",
        },
        r"SCHEDULED runs (of the deleted schedule )?are still there after DELETE|after DELETE of schedule "
        r"'quarter-to', "
        r"[1-9]\d* of its \d+ SCHEDULED runs are still there",
        markers="scheduler",
        args=("-k", "deleting"),
    ),
    Case(
        "scheduler-horizon-of-30-minutes",
        lambda: RewritesRuns(horizon_of(30)),
        {f"scheduler/scheduler_keeps_prefects_horizon[{case}]" for case in HORIZON_CASES}
        - {
            "scheduler/scheduler_keeps_prefects_horizon[every-10-seconds]",
            "scheduler/scheduler_keeps_prefects_horizon[yearly-150-days-ahead]",
        },
        r"the runs not yet due at .* are \d+ runs?.*; Prefect's scheduler keeps \d+ runs?.* \(first difference at run "
        r"\d+: Prefect's is [\d-]+T[\d:]+Z, the target's none\)\. Limits: min_runs=3, max_runs=100",
        markers="scheduler",
        passes={"scheduler/scheduler_keeps_prefects_horizon[yearly-150-days-ahead]"},
        args=("-k", "horizon", "--timeout-scale", "0.5"),
    ),
    Case(
        "scheduler-never-tops-up",
        lambda: RewritesRuns(first_pass_only()),
        {"scheduler/scheduler_keeps_prefects_horizon[every-10-seconds]"},
        r"looked at again once runs had fallen due: the runs not yet due at .* are \d+ runs, .*; Prefect's scheduler "
        r"keeps 100 runs, .*max_runs=100 of them, topped up within \d+ s",
        markers="scheduler",
        passes={
            "scheduler/scheduler_keeps_prefects_horizon[hourly]",
            "scheduler/scheduler_keeps_prefects_horizon[daily]",
        },
        args=("-k", "horizon", "--timeout-scale", "0.5"),
    ),
    Case(
        "cancellation-ignored",
        lambda: IgnoresCancellation(),
        {
            f"lifecycle/{check}[{client}]"
            for client in ("runner", "worker")
            for check in (
                "a_running_run_cancelled_ends_cancelled",
                "a_scheduled_run_cancelled_before_it_starts_never_runs",
            )
        },
        r"waiting for flow run .* to be executed by the (runner|worker) and reach a final state\. Last seen: run is "
        r"RUNNING/Running|got ACCEPT with state CANCELLING/Cancelling, and the run is (SCHEDULED|PENDING|RUNNING)/",
        markers="lifecycle",
        passes={
            "lifecycle/a_failing_flow_retries_until_it_completes[runner]",
            "lifecycle/a_failing_flow_retries_until_it_completes[worker]",
        },
        long=True,
        args=("-k", "running_run_cancelled or cancelled_before_it_starts or failing_flow_retries"),
    ),
    Case(
        "crashed-refused",
        lambda: RefusesCrashed(),
        {
            "lifecycle/a_killed_flow_run_process_ends_crashed[runner]",
            "lifecycle/a_killed_flow_run_process_ends_crashed[worker]",
        },
        r"waiting for flow run .* to be executed by the (runner|worker) and reach a final state\. Last seen: run is "
        r"RUNNING/Running.*Hint: the (runner|worker) proposes CRASHED",
        markers="lifecycle",
        passes={
            "lifecycle/a_failing_flow_retries_until_it_completes[runner]",
            "lifecycle/a_scheduled_run_cancelled_before_it_starts_never_runs[worker]",
        },
        long=True,
        args=("-k", "killed_flow_run or failing_flow_retries or cancelled_before_it_starts"),
    ),
    Case(
        "resume-refused",
        lambda: RefusesResume(),
        {
            f"lifecycle/{check}[{client}]"
            for client in ("runner", "worker")
            for check in ("a_paused_run_resumes_and_completes", "a_suspended_run_resumes_and_runs_again")
        }
        | {"lifecycle/a_paused_run_resumes_with_the_input_it_waits_for"},
        r"without the input the run waits for got ABORT with state None/None \(resuming is not supported\)|"
        r"POST /flow_runs/\{id\}/resume of the (paused|suspended) run got ABORT with state None/None \(resuming is not "
        r"supported\); Prefect (accepts it|reschedules it)",
        markers="lifecycle",
        passes={
            "lifecycle/a_failing_flow_retries_until_it_completes[worker]",
            "lifecycle/a_scheduled_run_cancelled_before_it_starts_never_runs[runner]",
        },
        args=(
            "-k",
            "paused_run_resumes or suspended_run_resumes or failing_flow_retries or cancelled_before_it_starts",
        ),
    ),
    Case(
        "lifecycle-services-missing",
        lambda: LacksLifecycleServices(),
        {
            "lifecycle/a_worker_that_dies_is_marked_offline",
            "lifecycle/a_suspended_run_never_resumed_fails_when_its_pause_expires",
        },
        r"Last seen: the worker is listed 'ONLINE' .*its pool 'READY'.*Hint: Prefect's foreman|Last seen: run is "
        r"PAUSED/Suspended .*Hint: Prefect's pause-expirations service",
        markers="lifecycle",
        passes={
            "lifecycle/a_killed_flow_run_process_ends_crashed[worker]",
            "lifecycle/a_failing_flow_retries_until_it_completes[runner]",
        },
        long=True,
        args=("-k", "worker_that_dies or never_resumed or killed_flow_run or failing_flow_retries"),
    ),
    Case(
        "failures-are-final",
        lambda: MakesFailuresFinal(),
        {
            "lifecycle/a_failing_flow_retries_until_it_completes[runner]",
            "lifecycle/a_failing_flow_retries_until_it_completes[worker]",
        },
        r"with retries=2 ended FAILED/Failed .* with run_count 1, after 1 attempts of its code; .* States kept: .*"
        r"RUNNING/Running, FAILED/Failed",
        markers="lifecycle",
        passes={
            "lifecycle/a_scheduled_run_cancelled_before_it_starts_never_runs[runner]",
            "lifecycle/a_running_run_cancelled_ends_cancelled[worker]",
        },
        args=("-k", "failing_flow_retries or cancelled_before_it_starts or running_run_cancelled"),
    ),
    Case(
        "limits-and-task-runs-ignored",
        lambda: Together(
            IgnoresLimits(),
            AcceptsWithout("POST", r"/deployments/$", "concurrency_limit"),
            LacksTaskRunRecorder(),
            AcceptsWithout("POST", r"/flow_runs/[^/]+/resume$", "run_input"),
        ),
        {
            "lifecycle/a_global_concurrency_limit_keeps_its_holders_apart",
            "lifecycle/a_tag_concurrency_limit_keeps_its_tasks_apart",
            "lifecycle/a_deployment_concurrency_limit_queues_the_second_run",
            "lifecycle/a_tasks_retries_are_kept",
            "lifecycle/a_paused_run_resumes_with_the_input_it_waits_for",
        },
        r"the target granted (the one-slot limit|the task-run concurrency limit on tag) '[^']+' 2 times while the "
        r"(runner|worker)'s run held it"
        r"|side by side, though their deployment's concurrency_limit is 1|neither run was ever AwaitingConcurrencySlot"
        r"|waiting for the target to keep the COMPLETED task run of flow run .*its task runs: none"
        r"|resume with run_input \{'value': 'answer-[0-9a-f]+'\} got REJECT",
        markers="lifecycle",
        passes={"lifecycle/a_killed_flow_run_process_ends_crashed[runner]"},
        args=(
            "-k",
            "global_concurrency or tag_concurrency or deployment_concurrency or tasks_retries or killed_flow_run "
            "or input_it_waits",
        ),
    ),
    Case(
        "tag-limits-missing",
        lambda: Refuses("POST", r"(?<!/v2)/concurrency_limits/$"),
        {"lifecycle/a_tag_concurrency_limit_keeps_its_tasks_apart"},
        r"the target does not implement POST /concurrency_limits/",
        markers="lifecycle",
        passes={"lifecycle/a_killed_flow_run_process_ends_crashed[runner]"},
        args=("-k", "tag_concurrency or killed_flow_run"),
        unsupported=True,
    ),
    Case(
        "pending-unguarded",
        lambda: LacksPendingGuard(),
        {"lifecycle/every_run_is_executed_exactly_once_among_three_workers"},
        r"of 6 runs due at once to three workers, \d+ did not run their flow code once and complete: .* ran [2-9] "
        r"times"
        # or a run whose second PENDING landed while its first execution ran: left PENDING, completed by no one
        r"|Timed out after [\d.]+s waiting for flow run \S+ to be executed by the crowd-worker-\d and reach a final "
        r"state\. Last seen: run is PENDING/",
        markers="lifecycle",
        passes={"lifecycle/a_killed_flow_run_process_ends_crashed[runner]"},
        args=("-k", "exactly_once or killed_flow_run", "--max-starts", "6"),
    ),
    Case(
        "never-not-ready",
        ReportsAlwaysReady,
        {
            "statuses/a_new_pool_is_not_ready_or_paused_as_created",
            "statuses/a_resumed_pool_is_ready_with_an_online_worker_and_not_ready_without",
            "statuses/a_resumed_queue_no_one_polled_is_not_ready",
            "statuses/a_queue_no_one_polls_becomes_not_ready",
            "statuses/a_deployment_no_one_polls_becomes_not_ready",
        },
        r"is 'READY' (as created|resumed without a worker|paused and resumed without ever being polled); Prefect's is "
        r"NOT_READY|Last seen: (work queue|deployment) \S+ is 'READY', \d+ s after its one poll",
        markers="statuses",
        passes={
            "statuses/a_heartbeat_never_resumes_a_paused_pool",
            "statuses/a_polled_queue_is_ready_paused_when_paused_and_ready_again_when_resumed",
        },
    ),
    Case(
        "activity-ends-pauses",
        EndsPausesOnActivity,
        {
            "statuses/a_heartbeat_never_resumes_a_paused_pool",
            "statuses/a_polled_queue_is_ready_paused_when_paused_and_ready_again_when_resumed",
        },
        r"is 'READY' (after PATCH is_paused true|after its worker's next heartbeat|after a worker polled it); "
        r"Prefect's is PAUSED",
        markers="statuses",
        passes={
            "statuses/a_new_pool_is_not_ready_or_paused_as_created",
            "statuses/a_resumed_queue_no_one_polled_is_not_ready",
        },
        args=("-k", "not no_one_polls"),
    ),
    Case(
        "idempotency-ignored-and-upserts-start-over",
        lambda: Together(ignores_idempotency(), StartsUpsertsOver()),
        {
            "upserts/a_flow_run_sent_twice_with_one_idempotency_key_is_one_run",
            "upserts/a_deployment_run_sent_twice_with_one_idempotency_key_is_one_run",
            "upserts/a_task_run_sent_twice_is_one_task_run",
            "upserts/a_deployment_sent_again_keeps_its_id_and_what_the_request_left_out",
        },
        r"sent twice with one (idempotency_key|task_key and dynamic_key) made two runs \(\S+ and then \S+\)|the "
        r"deployment sent again with only "
        r"a new description reads \{'description': 'as sent again', 'tags': \[\], 'paused': False, "
        r"'concurrency_limit': None\}",
        markers="upserts",
        passes={"upserts/a_schedule_patched_by_its_slug_is_changed_in_place"},
    ),
    Case(
        "always-created-and-schedules-replaced",
        lambda: Together(AlwaysCreates(), ReplacesSchedules()),
        {
            "upserts/a_flow_run_sent_twice_with_one_idempotency_key_is_one_run",
            "upserts/a_deployment_run_sent_twice_with_one_idempotency_key_is_one_run",
            "upserts/a_task_run_sent_twice_is_one_task_run",
            "upserts/a_schedule_patched_by_its_slug_is_changed_in_place",
        },
        r"was answered 201 and then 201 \(the same run\)|its schedules are \(slug, interval, same id as before\) "
        r"\[\('pc-hourly', 7200(\.0)?, False\)\]",
        markers="upserts",
        passes={"upserts/a_deployment_sent_again_keeps_its_id_and_what_the_request_left_out"},
    ),
    Case(
        "runs-inherit-no-labels",
        KeepsOwnLabelsOnly,
        {
            "labels/a_deployment_run_carries_its_deployments_labels_and_both_ids",
            "labels/a_flow_run_carries_its_flows_labels_and_the_flow_id",
        },
        r"has labels \{.*\}, without \{'pc\.flow': 'flow'",
        markers="labels",
        passes={"labels/a_deployment_carries_its_flows_labels_and_the_flow_id"},
    ),
    Case(
        "deployments-without-system-labels",
        LacksSystemLabels,
        {"labels/a_deployment_carries_its_flows_labels_and_the_flow_id"},
        r"a deployment \(GET /deployments/\S+\) has labels .*, without \{'prefect\.flow\.id': ",
        markers="labels",
        passes={
            "labels/a_deployment_run_carries_its_deployments_labels_and_both_ids",
            "labels/a_flow_run_carries_its_flows_labels_and_the_flow_id",
        },
    ),
    Case(
        "offset-ignored",
        IgnoresOffset,
        {f"lists/pages_hold_each_object_once_in_order[{kind}]" for kind in LISTED_KINDS}
        | {"lists/a_pools_queues_are_paged_by_priority", "lists/a_pools_workers_are_paged_by_their_last_heartbeat"},
        r"in pages of 3 gave \[\[(?P<first>[^]]*)\], \[(?P=first)\], \[(?P=first)\]",
        markers="lists",
        passes={f"lists/count_agrees_with_the_list[{kind}]" for kind in LISTED_KINDS},
    ),
    Case(
        "counts-one-more",
        CountsOneMore,
        {f"lists/count_agrees_with_the_list[{kind}]" for kind in LISTED_KINDS},
        r"POST /\w+/count answered 8 for the filter under which POST /\w+/filter lists 7 objects",
        markers="lists",
        passes={f"lists/pages_hold_each_object_once_in_order[{kind}]" for kind in LISTED_KINDS},
    ),
    Case(
        "related-filters-ignored",
        IgnoresRelatedFilters,
        {
            f"lists/{check}"
            for check in (
                "flow_runs_are_selected_by_their_deployment",
                "flow_runs_are_selected_by_their_work_queue",
                "flow_runs_are_selected_by_tag",
                "flow_runs_are_selected_by_state_name",
                "deployments_are_selected_by_their_flow_runs",
                "flows_are_selected_by_their_deployments",
            )
        },
        r"POST /\w+/filter with .* listed \[.*'another \(.*\)'.*\]; Prefect lists \[",
        markers="lists",
        passes={
            f"lists/{check}[{kind}]"
            for check in ("pages_hold_each_object_once_in_order", "count_agrees_with_the_list")
            for kind in LISTED_KINDS
        },
    ),
    Case(
        "times-sorted-as-strings",
        SortsTimesAsStrings,
        {
            f"lists/flow_runs_are_sorted_as_prefect_sorts_them[{sort}]"
            for sort in (
                "EXPECTED_START_TIME_ASC",
                "EXPECTED_START_TIME_DESC",
                "NEXT_SCHEDULED_START_TIME_ASC",
                "START_TIME_ASC",
                "START_TIME_DESC",
            )
        },
        r"with sort \w+ listed the runs \['(e', 'a|b', 'c', 'd', 'a', 'e)'.*; Prefect lists .*sorted by instant",
        markers="lists",
        passes={
            "lists/flow_runs_are_sorted_as_prefect_sorts_them[NAME_ASC]",
            "lists/flow_runs_are_sorted_as_prefect_sorts_them[NAME_DESC]",
        },
        args=("-k", "sorted"),
    ),
    Case(
        "scheduler-duplicates-runs",
        lambda: RewritesRuns(duplicate_auto_scheduled),
        {"scheduler/no_duplicate_runs"},
        r"occurrences were scheduled more than once",
        markers="scheduler",
        passes={"scheduler/scheduled_run_times_agree"},
        args=CRON_DEPLOYMENT_ONLY,
    ),
    Case(
        "scheduled-runs-without-next-scheduled-start-time",
        lambda: RewritesRuns(without("next_scheduled_start_time")),
        {"scheduler/scheduled_run_times_agree"},
        r"has no next_scheduled_start_time",
        markers="scheduler",
        passes={"scheduler/runs_fall_on_cron_boundaries"},
        args=CRON_DEPLOYMENT_ONLY,
    ),
]


#: The lifecycle cases take turns on one pytest worker: each starts a Runner and workers and a dozen or more flow-run
#: processes, and side by side on two cores they starve the SQLite reference (503s, runs CRASHED).
LIFECYCLE_GROUP = pytest.mark.xdist_group("lifecycle")


@dataclass
class Merged:
    """Lifecycle cases that share one suite run: their deviations together, each on its own traffic. Each case's
    checks must fail with its own message; ``passes`` are checks that none of them touches. One lifecycle world
    (a Runner, workers, their flow runs) serves them all instead of one each."""

    id: str
    cases: tuple[str, ...]
    passes: set[str]


MERGED = [
    Merged(
        "cancel-crash-resume-services-tag-limits",
        (
            "cancellation-ignored",
            "crashed-refused",
            "resume-refused",
            "lifecycle-services-missing",
            "tag-limits-missing",
        ),
        {
            "lifecycle/a_failing_flow_retries_until_it_completes[runner]",
            "lifecycle/a_failing_flow_retries_until_it_completes[worker]",
        },
    ),
    Merged(
        "failures-final-limits-and-task-runs",
        ("failures-are-final", "limits-and-task-runs-ignored"),
        {
            "lifecycle/a_killed_flow_run_process_ends_crashed[runner]",
            "lifecycle/a_scheduled_run_cancelled_before_it_starts_never_runs[runner]",
        },
    ),
]
MERGED_IDS = {case_id for merged in MERGED for case_id in merged.cases}


def case_marks(case: Case) -> list[pytest.MarkDecorator]:
    return ([pytest.mark.long] if case.long else []) + ([LIFECYCLE_GROUP] if case.markers == "lifecycle" else [])


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=case_marks(c)) for c in CASES if c.id not in MERGED_IDS]
)
def test_deviation_fails_the_checks_it_should(case: Case, deviating, suite) -> None:
    proxy = deviating(case.deviation())
    case.assert_caught(suite("--target", proxy.api_url, *case.options()))


def k_expression(args: tuple[str, ...]) -> str:
    return args[args.index("-k") + 1]


@pytest.mark.long
@LIFECYCLE_GROUP
@pytest.mark.parametrize("merged", MERGED, ids=lambda merged: merged.id)
def test_lifecycle_deviations_together_fail_each_its_own_checks(merged: Merged, deviating, suite) -> None:
    cases = [next(c for c in CASES if c.id == case_id) for case_id in merged.cases]
    touched = {check for case in cases for check in case.fails}
    assert not merged.passes & touched, f"{merged.id}: a check named to pass is one a case fails"
    proxy = deviating(Together(*(case.deviation() for case in cases)))
    selection = " or ".join(f"({k_expression(case.args)})" for case in cases)
    # Two processes: the lifecycle modules' failing checks mostly wait out their timeouts, side by side.
    run: SuiteRun = suite("--target", proxy.api_url, "-m", "lifecycle", "-k", selection, "-n", "2")
    for case in cases:
        case.assert_caught(run, passes=merged.passes)


def test_worker_without_the_channel_falls_back_to_http_heartbeats(deviating, suite) -> None:
    """A target that refuses the websocket ``/work_pools/{pool}/workers/connect`` (as one without it does: 403 from
    Starlette, 404 elsewhere) still gets a working worker: 3.9.1 falls back to ``POST .../workers/heartbeat``, and
    every worker check passes. Which path the target supports shows in the worker's transcript."""
    proxy = deviating(Refuses("NONE", r"^$", websocket_path=r"/workers/connect$"))
    run = suite("--target", proxy.api_url, "-m", "worker")
    assert run.code == 0, run.explain()
    transcript = (run.report_dir / "artifacts" / "worker" / "worker.transcript.jsonl").read_text()
    exchanges = [json.loads(line) for line in transcript.splitlines()]
    assert any(e["path"].endswith("/workers/connect") and e["status"] == 403 for e in exchanges), transcript[:2000]
    assert any(e["path"].endswith("/workers/heartbeat") and 200 <= e["status"] < 300 for e in exchanges), transcript[
        :2000
    ]
    # The report says, as information, that the worker went on without the websocket it was refused.
    note = run.checks["worker/worker_run_completes"]["measured"]
    assert re.search(
        r"refused the worker's websockets: WS /work_pools/[^ ]+/workers/connect -> 403 .*; it ran its run "
        r"to COMPLETED without them",
        note,
    ), note


@pytest.mark.long
def test_scheduler_checks_pass_at_prefects_default_interval(reference, suite, monkeypatch) -> None:
    """Against a ``--target`` the scheduler waits follow Prefect's 60 s loop unless told otherwise, and the checks
    still pass on the reference, whose scheduler adds a run every minute (a 63-s window over all its runs never
    held still)."""
    monkeypatch.delenv(SCHEDULER_INTERVAL_ENV, raising=False)
    run = suite("--target", reference.api_url, "-m", "scheduler", "-k", CRON_DEPLOYMENT_ONLY[1])
    assert run.code == 0 and len(run.passed()) == 4, run.explain()


def reference_without(tmp_path_factory, *services: str) -> LocalReference:
    """A real Prefect server whose ``services`` (as Prefect's settings name them) are off."""
    return LocalReference(
        workdir=tmp_path_factory.mktemp(f"no-{services[0]}"),
        settings={f"PREFECT_SERVER_SERVICES_{service.upper()}_ENABLED": "false" for service in services},
    )


@pytest.fixture(scope="module")
def reference_without_scheduler(tmp_path_factory):
    """A target that never expands schedules."""
    with reference_without(tmp_path_factory, "scheduler") as server:
        yield server


@pytest.mark.long
def test_target_without_a_scheduler_fails_with_a_message_that_says_so(reference_without_scheduler, suite) -> None:
    # The scheduler and serve modules each wait out their timeouts; in two pytest workers the waits overlap.
    run = suite(
        "--target",
        reference_without_scheduler.api_url,
        "-m",
        "scheduler or serve",
        "-k",
        f"{CRON_DEPLOYMENT_ONLY[1]} or served_run_completes or runner_executes_server_scheduled_runs",
        "--timeout-scale",
        "0.5",
        "-n",
        "2",
    )
    assert run.code == 1, run.explain()
    expected = {
        f"scheduler/{c}"
        for c in (
            "scheduler_creates_runs",
            "runs_fall_on_cron_boundaries",
            "scheduled_run_times_agree",
            "no_duplicate_runs",
        )
    }
    assert expected | {"serve/runner_executes_server_scheduled_runs"} <= run.failed(), run.explain()
    assert "waiting for the target's scheduler to create SCHEDULED runs" in run.message(
        "scheduler/scheduler_creates_runs"
    )
    assert "serve/served_run_completes" in run.passed(), run.explain()


@pytest.fixture(scope="module")
def reference_without_cleanup_services(tmp_path_factory):
    """A target without the service that cancels a cancelled run's subflows, as the Zig port's notes say it lacks,
    nor the one that frees the slots of expired concurrency leases."""
    with reference_without(tmp_path_factory, "cancellation_cleanup", "repossessor") as server:
        # Its first answer to GET /admin/version took over the suite's 5-s preflight in a loaded make test: asked
        # here first, with time to spare, the suite's preflight finds it warm.
        httpx.get(f"{server.api_url}/admin/version", timeout=60).raise_for_status()
        yield server


@pytest.mark.long
@LIFECYCLE_GROUP
def test_target_without_cleanup_services_leaves_the_subflow_running_and_the_slot_taken(
    reference_without_cleanup_services, suite
) -> None:
    """The subflow of a cancelled parent is never cancelled there, and a dead holder's slot never freed: each check
    fails naming the service and what it left, while cancelling a run itself still passes."""
    run = suite(
        "--target",
        reference_without_cleanup_services.api_url,
        "-m",
        "lifecycle",
        "-k",
        "subflow or running_run_cancelled or lease",
        "--service-loops",
        "cancellation_cleanup=1,repossessor=1",
        "-n",
        "2",  # the lease's minute beside the subflow's and the cancellation's waits
    )
    check, lease = (
        "lifecycle/a_cancelled_runs_subflow_is_cancelled_too",
        "lifecycle/a_dead_holders_global_slot_is_freed_when_its_lease_expires",
    )
    assert run.code == 1 and run.failed() == {check, lease}, run.explain()
    assert re.search(
        r"Last seen: run is RUNNING/Running.*Hint: Prefect's cancellation-cleanup service proposes "
        r"CANCELLING for a subflow run whose parent is CANCELLED",
        run.message(check),
        re.S,
    ), run.explain()
    assert re.search(
        r"Last seen: GET /v2/concurrency_limits/\S+ answers active_slots 1, \d+ s after the dead "
        r"holder's 60-s lease expired.*Hint: Prefect's repossessor service",
        run.message(lease),
        re.S,
    ), run.explain()
    assert "lifecycle/a_running_run_cancelled_ends_cancelled[runner]" in run.passed(), run.explain()


# --- the capacity measurement (-m load): opt-in, a figure rather than a verdict, but it can fail -----------------


@pytest.mark.long
def test_the_capacity_measurement_names_the_largest_wave_served_and_fails_when_none_is(
    reference, deviating, suite
) -> None:
    """The reference serves every wave; a target that serves one run at a time is measured at 1 (the wave of 2
    quoted: a run crashed, a 500), passing; one that serves none fails."""
    from tests.deviations.load import RefusesRunsBeyond

    small = {"PREFECT_CONFORMANCE_LOAD_WAVES": "1,2"}  # two waves show it; eight runs at once cost minutes here
    own = suite("--target", reference.api_url, "-m", "load", extra_env=small)
    check = own.checks.get("load/runs_due_at_once_served_without_errors", {})
    assert own.code == 0 and check.get("measured", "").startswith("served "), own.explain()  # 2 unless it is busy
    one = suite("--target", deviating(RefusesRunsBeyond(1)).api_url, "-m", "load", extra_env=small)
    check = one.checks.get("load/runs_due_at_once_served_without_errors", {})
    assert one.code == 0 and check.get("outcome") == "passed", one.explain()
    assert check["measured"].startswith("served 1 runs due at once") and "a wave of 2:" in check["measured"], check
    none = suite("--target", deviating(RefusesRunsBeyond(0)).api_url, "-m", "load", extra_env=small)
    assert none.code == 1 and none.failed() == {"load/runs_due_at_once_served_without_errors"}, none.explain()
    assert (
        "the target could not serve one run; a wave of 1:"
        in none.checks["load/runs_due_at_once_served_without_errors"]["message"]
    ), none.explain()


def test_the_capacity_measurement_runs_only_when_asked_for() -> None:
    from harness.commands.scenarios_run import selected_features

    assert "load" not in selected_features(None) and "load" not in selected_features("not timestamps")
    assert selected_features("load") == ["load"]
