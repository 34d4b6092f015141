"""The scheduling-query checks pass on the reference and fail on targets that get the query subtly wrong.

The deviations are the mistakes alternative servers have actually made or could easily make: comparing or
sorting timestamp strings, half-open bounds, a missing or never-updated ``next_scheduled_start_time``,
ignored ``limit`` or queue names, queue priority ignored, ties collapsed.
"""

from __future__ import annotations

import pytest

from tests.conftest import DeviationCase as Case
from tests.deviations.framework import AcceptsWithout, RewritesJson, RewritesPolls, RewritesRuns
from tests.deviations.scheduling import (
    ComparesBeforeAsStrings,
    DropsRequestFields,
    FiltersPollsOnlyByTime,
    HandsOutOnce,
    IgnoresPause,
    ReadsFirstValueOnly,
    RetriesByRescheduling,
    drop_ties,
    exclusive_after,
    exclusive_before,
    string_sorted,
    time_sorted_ignoring_priority,
)


def s(*names: str) -> set[str]:
    return {f"scheduling/{n}" for n in names}


def not_cleared(run: dict) -> dict:
    if (run.get("state") or {}).get("type") != "SCHEDULED" and run.get("next_scheduled_start_time") is None:
        return {**run, "next_scheduled_start_time": run.get("expected_start_time")}
    return run


CASES = [
    Case(
        "awaiting-retry-without-next-scheduled-start-time",
        lambda: RewritesRuns(
            lambda run: (
                {**run, "next_scheduled_start_time": None}
                if (run.get("state") or {}).get("name") == "AwaitingRetry"
                else run
            )
        ),
        s(
            "next_scheduled_start_time_set_when_a_running_run_awaits_retry",
            "next_scheduled_start_time_follows_reschedule",
        ),
        r"next_scheduled_start_time (is )?None",
        passes=s("next_scheduled_start_time_set_on_create", "next_scheduled_start_time_kept_for_late_runs"),
        keywords="next_scheduled_start_time",
        markers="scheduling",
    ),
    Case(
        "polls-hand-out-each-run-once",
        lambda: HandsOutOnce(),
        s("work_queue_names_hands_out_a_run_moved_back_to_scheduled"),
        r"the same poll after the run went PENDING and back to SCHEDULED .*first difference at position 0",
        passes=s("paused_work_pool_hands_out_nothing"),
        keywords="moved_back or paused_work_pool",
        markers="scheduling",
    ),
    Case(
        "in-process-retries-handed-out",
        lambda: RetriesByRescheduling(),
        s("work_pool_poll_skips_a_run_retrying_in_process"),
        r"awaits its in-process retry: first difference at position 0 \(expected 1 runs, got 2\).*actual\s+\[held@",
        passes=s("paused_work_pool_hands_out_nothing"),
        keywords="retrying_in_process or paused_work_pool",
        markers="scheduling",
    ),
    Case(
        "concurrency-limit-not-stored",
        lambda: AcceptsWithout("PATCH", r"/work_pools/", "concurrency_limit"),
        s(
            "concurrency_limit_counts_pending_and_running_runs[work_pool]",
            "concurrency_limit_counts_pending_and_running_runs[work_queue]",
        ),
        r"with work_(pool|queue) concurrency_limit 2 .*first difference at position 0",
        passes=s("paused_work_pool_hands_out_nothing"),
        keywords="concurrency_limit or paused_work_pool",
        markers="scheduling",
    ),
    Case(
        "pause-ignored",
        lambda: IgnoresPause(),
        s("paused_work_pool_hands_out_nothing", "paused_work_queue_hands_out_nothing"),
        r"paused",
        passes=s("work_pool_poll_limit"),
        keywords="paused or work_pool_poll_limit",
        markers="scheduling",
    ),
    Case(
        "next-scheduled-start-time-missing",
        lambda: RewritesRuns(lambda run: {**run, "next_scheduled_start_time": None}),
        s("next_scheduled_start_time_set_on_create", "next_scheduled_start_time_kept_for_late_runs"),
        r"null for a SCHEDULED run|Late run has next_scheduled_start_time None",
        keywords="next_scheduled_start_time",
        markers="scheduling",
    ),
    Case(
        "next-scheduled-start-time-not-cleared",
        lambda: RewritesRuns(not_cleared),
        s("next_scheduled_start_time_cleared_when_leaving_scheduled"),
        r"a PENDING run still has next_scheduled_start_time",
        passes=s("next_scheduled_start_time_set_on_create"),
        keywords="next_scheduled_start_time",
        markers="scheduling",
    ),
    Case(
        "next-scheduled-start-time-never-updated",
        lambda: ReadsFirstValueOnly("next_scheduled_start_time"),
        s("next_scheduled_start_time_follows_reschedule"),
        r"after rescheduling from .* next_scheduled_start_time is",
        passes=s("next_scheduled_start_time_set_on_create"),
        keywords="next_scheduled_start_time",
        markers="scheduling",
    ),
    Case(
        "poll-sorted-as-strings",
        lambda: RewritesPolls(string_sorted),
        s("deployment_poll_orders_by_next_scheduled_start_time", "deployment_poll_without_bound_returns_all_scheduled"),
        r"first difference at position 2 .*\n\s+expected .*whole@.*\n\s+actual .*half@",
        passes=s("deployment_poll_bound_is_inclusive[one-us-before-a-run]"),
        keywords="deployment_poll",
        markers="scheduling",
    ),
    Case(
        "poll-sorted-descending",
        lambda: RewritesPolls(
            lambda body, items: sorted(items, key=lambda r: r["next_scheduled_start_time"] or "", reverse=True)
        ),
        s("deployment_poll_orders_by_next_scheduled_start_time", "deployment_poll_limit"),
        r"first difference at position 0",
        keywords="deployment_poll",
        markers="scheduling",
    ),
    Case(
        "poll-bound-exclusive",
        lambda: RewritesPolls(exclusive_before),
        s("deployment_poll_bound_is_inclusive[at-a-run]", "deployment_poll_bound_is_inclusive[at-a-fractional-run]"),
        r"expected 3 runs, got 2|expected 4 runs, got 3",
        passes=s("deployment_poll_bound_is_inclusive[one-us-after-a-run]"),
        keywords="deployment_poll",
        markers="scheduling",
    ),
    Case(
        "poll-bound-compared-as-strings",
        lambda: ComparesBeforeAsStrings(),
        s(
            "deployment_poll_bound_in_any_format[whole-space-separator]",
            "deployment_poll_bound_in_any_format[whole-positive-offset]",
            "deployment_poll_bound_in_any_format[whole-utc-z-millis]",
            "deployment_poll_bound_in_any_format[half-offset-crossing-midnight]",
            "deployment_poll_bound_is_inclusive[at-a-fractional-run]",
        ),
        r"first difference at position",
        passes=s("deployment_poll_bound_is_inclusive[one-us-before-a-run]"),
        keywords="deployment_poll",
        markers="scheduling",
    ),
    Case(
        "poll-filters-only-by-time",
        FiltersPollsOnlyByTime,
        s("deployment_poll_only_returns_scheduled_runs_of_the_deployment"),
        r"returned runs it must not: \[.*left-scheduled\(PENDING\)@.*other-deployment-run@",
        keywords="deployment_poll",
        markers="scheduling",
    ),
    Case(
        "limit-ignored",
        lambda: DropsRequestFields("limit"),
        s("deployment_poll_limit", "work_pool_poll_limit", "many_runs_paged_like_a_runner_lose_nothing"),
        r"with limit 2: first difference at position 2|with limit 3: first difference|more than limit 15",
        keywords="limit or many_runs",
        markers="scheduling",
    ),
    Case(
        "deployment-never-marked-ready",
        lambda: RewritesJson("GET", r"/deployments/[0-9a-f-]{36}$", lambda d: {**d, "status": "NOT_READY"}),
        s("deployment_poll_marks_deployment_ready"),
        r"waiting for GET /deployments/\S+ to show status READY .* status 'NOT_READY'",
        keywords="marks_deployment_ready",
        args=("--timeout-scale", "0.2"),
        markers="scheduling",
    ),
    Case(
        "work-pool-poll-ignores-queue-priority",
        lambda: RewritesPolls(time_sorted_ignoring_priority, pools=True, deployments=False),
        s("work_pool_poll_orders_by_queue_priority_then_time", "work_pool_poll_limit"),
        r"expected \[urgent-1@.*\n\s+actual\s+\[routine-1@",
        passes=s("work_pool_poll_response_shape", "work_pool_poll_filters_by_queue_names"),
        keywords="work_pool_poll",
        markers="scheduling",
    ),
    Case(
        "work-pool-poll-after-exclusive",
        lambda: RewritesPolls(exclusive_after, pools=True, deployments=False),
        s("work_pool_poll_bounds_are_inclusive[both-at-runs]", "work_pool_poll_bounds_are_inclusive[space-form]"),
        r"expected 2 runs, got 1",
        passes=s("work_pool_poll_bounds_are_inclusive[one-us-inside]"),
        keywords="work_pool_poll",
        markers="scheduling",
    ),
    Case(
        "work-pool-poll-before-exclusive",
        lambda: RewritesPolls(exclusive_before, pools=True, deployments=False),
        s("work_pool_poll_bounds_are_inclusive[both-at-runs]"),
        r"expected 2 runs, got 1",
        passes=s("work_pool_poll_bounds_are_inclusive[one-us-inside]"),
        keywords="work_pool_poll",
        markers="scheduling",
    ),
    Case(
        "work-pool-poll-ignores-queue-names",
        lambda: DropsRequestFields("work_queue_names"),
        s("work_pool_poll_filters_by_queue_names"),
        r"with work_queue_names .*first difference at position 0",
        keywords="work_pool_poll",
        markers="scheduling",
    ),
    Case(
        "work-pool-poll-returns-bare-runs",
        lambda: RewritesPolls(lambda body, items: [i["flow_run"] for i in items], pools=True, deployments=False),
        s("work_pool_poll_response_shape"),
        r"an item lacks \['flow_run'",
        keywords="work_pool_poll",
        markers="scheduling",
    ),
    Case(
        "tied-runs-collapsed",
        lambda: RewritesPolls(drop_ties),
        s("many_runs_paged_like_a_runner_lose_nothing"),
        r"returned \d+ runs: 0 duplicated, \d+ never returned",
        passes=s("deployment_poll_orders_by_next_scheduled_start_time"),
        keywords="many_runs or deployment_poll_orders",
        markers="scheduling",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_deviation_fails_the_checks_it_should(case: Case, reference, deviating, suite) -> None:
    proxy = deviating(case.deviation())
    case.assert_caught(suite("--target", proxy.api_url, *case.options()))
