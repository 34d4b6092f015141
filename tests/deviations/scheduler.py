"""A scheduler that keeps the wrong horizon, never tops its series up, or stores schedules it should refuse."""

from __future__ import annotations

import datetime as dt
from typing import Callable

from harness.checks.timestamps import parse_instant
from tests.deviations.framework import RewritesSchedules


def horizon_of(minutes: int) -> Callable[[dict], dict | list[dict]]:
    """For :class:`RewritesRuns`: a scheduler that keeps runs only ``minutes`` ahead (auto-scheduled runs due later
    are not there)."""

    def fn(run: dict) -> dict | list[dict]:
        due = run.get("expected_start_time")
        ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
        return [] if run.get("auto_scheduled") and due and parse_instant(due) > ahead else run

    return fn


def first_pass_only() -> Callable[[dict], dict | list[dict]]:
    """For :class:`RewritesRuns`: a scheduler that expands a deployment once and never tops its series up (the
    auto-scheduled runs created more than 2 s after a deployment's first are not there)."""
    first: dict[str, dt.datetime] = {}

    def fn(run: dict) -> dict | list[dict]:
        if not run.get("auto_scheduled") or not run.get("created"):
            return run
        created = parse_instant(run["created"])
        deployment = run.get("deployment_id") or ""
        first[deployment] = min(first.get(deployment, created), created)
        return [] if created > first[deployment] + dt.timedelta(seconds=2) else run

    return fn


def stores_refused_schedules() -> RewritesSchedules:
    """A server that checks a schedule's shape and nothing more: each of the schedules Prefect refuses
    (``REFUSED_SCHEDULES``: a zero interval, an invalid cron string, an unknown time zone, ...) is stored, here as
    an hourly interval, the nearest thing the reference behind the proxy stores."""
    from harness.checks.bad_input import REFUSED_SCHEDULES

    return RewritesSchedules(lambda s: {"interval": 3600} if s in REFUSED_SCHEDULES.values() else s)


def interval_schedules(change: Callable[[dict], dict]) -> RewritesSchedules:
    """``change`` applied to interval schedules only (those with an ``interval``)."""
    return RewritesSchedules(lambda s: change(s) if "interval" in s else s)
