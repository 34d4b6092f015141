"""Occurrences of a schedule as Prefect computes them: the oracle of the scheduler checks that need no waiting.

The pinned Prefect's own schedule classes compute the dates, so a check compares the target with the reference's
behaviour (what happens in a daylight-saving gap or repeat included) without asking a server, and without a
hand-written table that could disagree with Prefect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from harness.checks.objects import runs_of_deployment
from harness.checks.timestamps import UTC
from harness.target.api import ApiClient

#: The most runs a window may hold in these checks (Prefect's own cap per call is its scheduler's max_runs, 100).
MAX_RUNS = 100


def prefect_occurrences(
    schedule: dict[str, Any], start: dt.datetime, end: dt.datetime, n: int = MAX_RUNS
) -> list[dt.datetime]:
    """The instants (UTC) at which Prefect schedules runs for ``schedule`` (a deployment schedule's ``schedule``
    body: cron, rrule or interval) from ``start`` to ``end``, at most ``n``."""
    from prefect.server.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule  # heavy: only here

    kind = CronSchedule if "cron" in schedule else RRuleSchedule if "rrule" in schedule else IntervalSchedule
    dates = asyncio.run(kind(**schedule).get_dates(n=n, start=start, end=end))
    # Plain datetimes: the arithmetic of some releases' own (pendulum) datetimes drops the zone.
    return [dt.datetime(*date.astimezone(UTC).timetuple()[:6], date.microsecond, tzinfo=UTC) for date in dates]


def expand_schedules(api: ApiClient, deployment_id: str, start: dt.datetime, end: dt.datetime) -> None:
    """``POST /deployments/{id}/schedule``: the target creates the runs of the deployment's active schedules from
    ``start`` to ``end`` now (what its scheduler service does in a loop), every occurrence in the window."""
    api.post(
        f"/deployments/{deployment_id}/schedule",
        expect=(200, 201, 204),
        body={
            "start_time": start.isoformat(),
            "end_time": end.isoformat(),
            "min_time": (end - start).total_seconds(),
            "min_runs": MAX_RUNS,
            "max_runs": MAX_RUNS,
        },
    )


#: The time zone of the daylight-saving checks: New York's changes are the ones most ports get wrong.
ZONE = "America/New_York"


def scheduled_runs(api: ApiClient, deployment_id: str, before: dt.datetime | None = None) -> list[dict[str, Any]]:
    return runs_of_deployment(
        api, deployment_id, "SCHEDULED", starting_before=before, sort="EXPECTED_START_TIME_ASC", limit=200
    )
