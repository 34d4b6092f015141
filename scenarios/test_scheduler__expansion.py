"""Scheduler: a schedule's expansion follows its time zone, interval anchor and calendar rules as Prefect computes them.

``POST /deployments/{id}/schedule`` over a window (no waiting) must give exactly the runs the pinned Prefect's own
schedule classes give: through daylight-saving changes, for intervals anchored at a local time, and for cron's and
rrule's details (day_or, macros, steps and ranges; COUNT, UNTIL, EXDATE and RDATE, BYSETPOS).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import pytest

from harness.checks.objects import Created, create_deployment, create_flow
from harness.checks.polling import assert_sequence
from harness.checks.schedules import ZONE, expand_schedules, prefect_occurrences, scheduled_runs
from harness.checks.timestamps import UTC, describe_instant, read_instant
from harness.target.api import ApiClient

pytestmark = pytest.mark.scheduler

# --- time zones: the expansion follows daylight-saving time as Prefect does ------------------------------------

#: Windows around New York's next daylight-saving changes: 02:00-03:00 local is skipped on 2027-03-14, and
#: 01:00-02:00 local happens twice on 2027-11-07.
DST_WINDOWS = {
    "spring-forward": (dt.datetime(2027, 3, 13, tzinfo=UTC), dt.datetime(2027, 3, 16, tzinfo=UTC)),
    "fall-back": (dt.datetime(2027, 11, 6, tzinfo=UTC), dt.datetime(2027, 11, 9, tzinfo=UTC)),
}
DST_SCHEDULES = {
    "cron-hourly": {"cron": "0 * * * *", "timezone": ZONE},
    "cron-daily-0130": {"cron": "30 1 * * *", "timezone": ZONE},
    "rrule-daily-0130": {"rrule": "DTSTART:20270301T013000\nFREQ=DAILY", "timezone": ZONE},
}


def wall_clock(instant: dt.datetime, zone: str | None) -> str:
    """The instant as the schedule's zone reads it, to the microsecond: "03-14 03:30:00.000000EDT"."""
    from zoneinfo import ZoneInfo

    return instant.astimezone(ZoneInfo(zone or "UTC")).strftime("%m-%d %H:%M:%S.%f%Z")


def assert_expands_as_prefect(
    api: ApiClient,
    created: Created,
    names: Callable[..., str],
    schedule: dict[str, Any],
    window: tuple[dt.datetime, dt.datetime],
) -> None:
    """A paused deployment with ``schedule`` (so the target's scheduler service leaves it alone: the runs are exactly
    the window's), expanded over ``window``: its SCHEDULED runs fall on the instants the pinned Prefect's own
    schedule classes compute, in order, none twice, none missing; a failure shows the zone's wall clock beside UTC."""
    start, end = window
    flow = create_flow(api, created, names("flow"))
    deployment = create_deployment(
        api, flow["id"], names("deployment"), paused=True, schedules=[{"schedule": schedule, "active": True}]
    )
    expand_schedules(api, deployment["id"], start, end)
    runs = scheduled_runs(api, deployment["id"])
    instants = [
        read_instant(r.get("expected_start_time"), f"expected_start_time of run {r.get('name')!r}") for r in runs
    ]
    zone = schedule.get("timezone")
    assert_sequence(
        f"runs of {schedule} from {describe_instant(start)} to {describe_instant(end)} (wall clock in {zone or 'UTC'})",
        [(wall_clock(i, zone), i) for i in prefect_occurrences(schedule, start, end)],
        [(wall_clock(i, zone), i) for i in instants],
    )


@pytest.mark.parametrize("transition", DST_WINDOWS)
@pytest.mark.parametrize("kind", DST_SCHEDULES)
def test_schedule_follows_daylight_saving_time(
    kind: str, transition: str, api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A {kind} schedule in America/New_York, expanded over the {transition} of 2027: its runs fall on the UTC
    instants Prefect computes, none twice and none missing."""
    assert_expands_as_prefect(api, created, names, DST_SCHEDULES[kind], DST_WINDOWS[transition])


# --- interval schedules: where a series starts and how it keeps its local time, as Prefect computes it ----------

#: Windows of 2027, far enough ahead that no run in them is due while the checks run.
JANUARY = (dt.datetime(2027, 1, 10, tzinfo=UTC), dt.datetime(2027, 1, 10, 6, tzinfo=UTC))
WINTER = (dt.datetime(2027, 1, 1, tzinfo=UTC), dt.datetime(2027, 3, 1, tzinfo=UTC))
SPRING_FORWARD, FALL_BACK = DST_WINDOWS["spring-forward"], DST_WINDOWS["fall-back"]
#: Sydney leaves daylight-saving time on 2027-04-04 and enters it on 2027-10-03 (southern hemisphere).
SYDNEY_APRIL = (dt.datetime(2027, 3, 1, tzinfo=UTC), dt.datetime(2027, 5, 1, tzinfo=UTC))
SYDNEY_OCTOBER = (dt.datetime(2027, 9, 1, tzinfo=UTC), dt.datetime(2027, 11, 1, tzinfo=UTC))
#: name -> (schedule, window). Anchors in the past and the future, with microseconds, with a UTC offset other than
#: zero and no time zone; intervals of seconds, minutes, an hour, a day and a week; New York's and Sydney's
#: daylight-saving changes, including a daily time that falls in the skipped hour.
INTERVAL_CASES: dict[str, tuple[dict[str, Any], tuple[dt.datetime, dt.datetime]]] = {
    "every-30-seconds-anchored-in-the-past": (
        {"interval": 30, "anchor_date": "2026-01-01T00:00:07Z", "timezone": "UTC"},
        (JANUARY[0], JANUARY[0] + dt.timedelta(minutes=30)),
    ),
    "every-7-minutes-anchored-in-the-future-with-microseconds": (
        {"interval": 420, "anchor_date": "2027-06-01T00:00:00.123456Z", "timezone": "UTC"},
        JANUARY,
    ),
    "every-90-minutes-anchored-at-plus-05-30": (
        {"interval": 5400, "anchor_date": "2026-02-28T12:34:56.5+05:30"},
        (JANUARY[0], JANUARY[0] + dt.timedelta(days=2)),
    ),
    "hourly-new-york-spring-forward": (
        {"interval": 3600, "anchor_date": "2027-01-01T00:30:00-05:00", "timezone": ZONE},
        (dt.datetime(2027, 3, 14, 4, tzinfo=UTC), dt.datetime(2027, 3, 14, 10, tzinfo=UTC)),
    ),
    "daily-0900-new-york-spring-forward": (
        {"interval": 86400, "anchor_date": "2027-01-01T09:00:00-05:00", "timezone": ZONE},
        SPRING_FORWARD,
    ),
    "daily-0900-new-york-fall-back": (
        {"interval": 86400, "anchor_date": "2027-01-01T09:00:00-05:00", "timezone": ZONE},
        FALL_BACK,
    ),
    "daily-0230-new-york-in-the-skipped-hour": (
        {"interval": 86400, "anchor_date": "2027-01-01T02:30:00-05:00", "timezone": ZONE},
        (dt.datetime(2027, 3, 10, tzinfo=UTC), dt.datetime(2027, 3, 18, tzinfo=UTC)),
    ),
    "weekly-sydney-april": (
        {"interval": 604800, "anchor_date": "2027-01-03T09:00:00+11:00", "timezone": "Australia/Sydney"},
        SYDNEY_APRIL,
    ),
    "weekly-sydney-october": (
        {"interval": 604800, "anchor_date": "2027-01-03T09:00:00+11:00", "timezone": "Australia/Sydney"},
        SYDNEY_OCTOBER,
    ),
}


@pytest.mark.parametrize("case", INTERVAL_CASES)
def test_interval_schedule_expands_as_prefect_does(
    case: str, api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """An interval schedule ({case}), expanded over its window: its runs fall on the instants Prefect computes from
    its anchor, interval and time zone, none missing, none twice."""
    assert_expands_as_prefect(api, created, names, *INTERVAL_CASES[case])


# --- cron and rrule details: day_or, macros, steps and ranges; COUNT, UNTIL, EXDATE and RDATE, BYSETPOS ---------

#: name -> (schedule, window).
CALENDAR_CASES: dict[str, tuple[dict[str, Any], tuple[dt.datetime, dt.datetime]]] = {
    "cron-day-of-month-or-weekday": (
        {"cron": "0 9 13 * 5", "timezone": "UTC", "day_or": True},
        (dt.datetime(2027, 1, 1, tzinfo=UTC), dt.datetime(2027, 9, 1, tzinfo=UTC)),
    ),
    "cron-day-of-month-and-weekday": (
        {"cron": "0 9 13 * 5", "timezone": "UTC", "day_or": False},
        (dt.datetime(2027, 1, 1, tzinfo=UTC), dt.datetime(2028, 12, 31, tzinfo=UTC)),
    ),
    "cron-daily-macro-berlin": (
        {"cron": "@daily", "timezone": "Europe/Berlin"},
        (dt.datetime(2027, 3, 20, tzinfo=UTC), dt.datetime(2027, 4, 5, tzinfo=UTC)),
    ),
    "cron-hourly-macro": ({"cron": "@hourly", "timezone": "UTC"}, (JANUARY[0], JANUARY[0] + dt.timedelta(days=1))),
    "cron-steps-and-ranges": (
        {"cron": "*/20 8-10,14 * * 1-5", "timezone": ZONE},
        (dt.datetime(2027, 1, 4, tzinfo=UTC), dt.datetime(2027, 1, 9, tzinfo=UTC)),
    ),
    "rrule-count": ({"rrule": "DTSTART:20270101T090000\nRRULE:FREQ=WEEKLY;COUNT=5", "timezone": "UTC"}, WINTER),
    "rrule-until": (
        {"rrule": "DTSTART:20270101T090000\nRRULE:FREQ=DAILY;UNTIL=20270110T090000", "timezone": "UTC"},
        WINTER,
    ),
    "rrule-exdate-and-rdate": (
        {
            "rrule": "DTSTART:20270101T090000\nRRULE:FREQ=DAILY;COUNT=10\nEXDATE:20270103T090000\n"
            "RDATE:20270120T120000",
            "timezone": "UTC",
        },
        WINTER,
    ),
    "rrule-last-weekday-of-the-month": (
        {"rrule": "DTSTART:20270101T090000\nRRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "timezone": "UTC"},
        (dt.datetime(2027, 1, 1, tzinfo=UTC), dt.datetime(2028, 1, 1, tzinfo=UTC)),
    ),
    # Prefect reads the schedule's time zone (UTC by default), not DTSTART's TZID: 09:00 UTC, not 09:00 in Tokyo.
    "rrule-dtstart-with-its-own-zone": (
        {"rrule": "DTSTART;TZID=Asia/Tokyo:20270101T090000\nRRULE:FREQ=DAILY;COUNT=5"},
        WINTER,
    ),
}


@pytest.mark.parametrize("case", CALENDAR_CASES)
def test_calendar_schedule_expands_as_prefect_does(
    case: str, api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A cron or rrule schedule ({case}), expanded over its window: its runs fall on the instants Prefect
    computes, none missing, none twice."""
    assert_expands_as_prefect(api, created, names, *CALENDAR_CASES[case])
