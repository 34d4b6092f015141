"""The scheduler's horizon as Prefect keeps it: how many runs of a schedule it keeps ahead, and how far.

Prefect's scheduler (``schedule_runs`` and ``_generate_scheduled_flow_runs`` in ``server/models/deployments.py``,
called by ``SchedulerService``) expands each active schedule from *now*: the occurrences until ``now +
max_scheduled_time``, at most ``max_runs`` of them, stopping at the first that makes ``min_runs`` and lies at or past
``now + min_scheduled_time``. It expands a deployment again as soon as one of its schedules has fewer than ``min_runs``
runs not yet due or none as far as ``now + min_scheduled_time`` (``_get_select_deployments_to_schedule_query`` in
``server/services/scheduler.py``), and inserts each occurrence once.

So whenever a deployment is looked at, its runs not yet due are exactly those of one such pass from a recent
instant: that is what :func:`horizon_problem` requires, computed with the pinned Prefect's own schedule classes and
its default limits, or the limits a target's author states (``--scheduler-limits``). No formula here decides what a
schedule's occurrences are.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

from harness.checks.schedules import prefect_occurrences
from harness.checks.timestamps import describe_instant

#: Where ``--scheduler-limits`` reaches the scenarios (and how a user sets them without the CLI).
SCHEDULER_LIMITS_ENV = "PREFECT_CONFORMANCE_SCHEDULER_LIMITS"
#: The most occurrences a window of these checks is asked for (a window is a few minutes of a schedule).
MAX_OCCURRENCES = 1000
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class SchedulerLimits:
    """A scheduler's limits, named as Prefect's settings ``PREFECT_SERVER_SERVICES_SCHEDULER_*`` name them."""

    min_runs: int
    max_runs: int
    min_scheduled_time: dt.timedelta
    max_scheduled_time: dt.timedelta

    def describe(self) -> str:
        return (
            f"min_runs={self.min_runs}, max_runs={self.max_runs}, "
            f"min_scheduled_time={duration(self.min_scheduled_time)}, "
            f"max_scheduled_time={duration(self.max_scheduled_time)}"
        )


def duration(value: dt.timedelta) -> str:
    """``3600 s`` as ``1h``, ``100 days`` as ``100d``: the largest unit that divides it."""
    seconds = int(value.total_seconds())
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{value.total_seconds():g}s"


def prefect_limits() -> SchedulerLimits:
    """The pinned Prefect's defaults (its settings model's, whatever this process's environment says): the limits
    of the bundled reference, which the suite starts without changing them."""
    from prefect.settings.models.server.services import ServerServicesSchedulerSettings  # heavy: only here

    fields = ServerServicesSchedulerSettings.model_fields
    return SchedulerLimits(
        fields["min_runs"].default,
        fields["max_runs"].default,
        fields["min_scheduled_time"].default,
        fields["max_scheduled_time"].default,
    )


def parse_limits(text: str, defaults: SchedulerLimits) -> SchedulerLimits:
    """``"min_runs=5,max_scheduled_time=30d"``: the named limits changed, the others ``defaults``'. Times take a unit
    (s, m, h, d; seconds without one). Raises ValueError naming what it could not read."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, raw = part.partition("=")
        name, raw = name.strip().lower(), raw.strip()
        if name in ("min_runs", "max_runs"):
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"{name} must be a whole number of runs, at least 1; got {raw!r}")
            values[name] = int(raw)
        elif name in ("min_scheduled_time", "max_scheduled_time"):
            match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", raw)
            if not match:
                raise ValueError(f"{name} must be a time such as 3600, 90m, 1h or 100d; got {raw!r}")
            values[name] = dt.timedelta(seconds=float(match[1]) * UNITS[match[2] or "s"])
        else:
            raise ValueError(
                f"unknown limit {name!r}: the limits are min_runs, max_runs, min_scheduled_time and max_scheduled_time"
            )
    limits = SchedulerLimits(**{**defaults.__dict__, **values})
    if limits.min_runs > limits.max_runs:
        raise ValueError(f"min_runs ({limits.min_runs}) is more than max_runs ({limits.max_runs})")
    return limits


def scheduler_limits() -> SchedulerLimits:
    """The limits the target's scheduler keeps: ``--scheduler-limits`` (or its variable), over Prefect's defaults."""
    return parse_limits(os.environ.get(SCHEDULER_LIMITS_ENV, ""), prefect_limits())


def prefect_pass(schedule: dict[str, Any], start: dt.datetime, limits: SchedulerLimits) -> list[dt.datetime]:
    """The runs one pass of Prefect's scheduler makes of ``schedule`` at ``start``
    (``_generate_scheduled_flow_runs``)."""
    dates = prefect_occurrences(schedule, start, start + limits.max_scheduled_time, n=limits.max_runs)
    for index, date in enumerate(dates):
        if index + 1 >= limits.min_runs and date >= start + limits.min_scheduled_time:
            return dates[: index + 1]
    return dates


def needs_runs(dates: Sequence[dt.datetime], at: dt.datetime, limits: SchedulerLimits) -> bool:
    """Whether Prefect's scheduler would expand a schedule whose runs are ``dates`` again at ``at``: fewer than
    ``min_runs`` not yet due, or none as far as ``at + min_scheduled_time``."""
    ahead = [date for date in dates if date >= at]
    return len(ahead) < limits.min_runs or max(ahead) < at + limits.min_scheduled_time


def why_it_ends(dates: Sequence[dt.datetime], start: dt.datetime, limits: SchedulerLimits) -> str:
    """Which limit ends a pass: for the failure message, so the author sees the rule their scheduler missed."""
    if len(dates) >= limits.max_runs:
        return f"max_runs={limits.max_runs} of them"
    if len(dates) >= limits.min_runs and dates and dates[-1] >= start + limits.min_scheduled_time:
        return (
            f"until the first at or past min_scheduled_time={duration(limits.min_scheduled_time)} ahead once "
            f"there are min_runs={limits.min_runs}"
        )
    return f"every one within max_scheduled_time={duration(limits.max_scheduled_time)} ahead"


def span(dates: Sequence[dt.datetime]) -> str:
    if len(dates) < 2:
        return "".join(f"1 run, {describe_instant(date)}" for date in dates) or "0 runs"
    return f"{len(dates)} runs, {describe_instant(dates[0])} to {describe_instant(dates[-1])}"


def pass_starts(
    schedule: dict[str, Any], low: dt.datetime, high: dt.datetime, limits: SchedulerLimits
) -> list[dt.datetime]:
    """Every instant in [low, high] from which a pass can differ from the one before: the result of
    :func:`prefect_pass` changes only where ``start`` passes an occurrence, or passes one less ``min_scheduled_time``
    (both comparisons are inclusive, so each interval between two of them is represented by its end)."""
    shift = limits.min_scheduled_time
    edges = set(prefect_occurrences(schedule, low, high, n=MAX_OCCURRENCES))
    edges |= {date - shift for date in prefect_occurrences(schedule, low + shift, high + shift, n=MAX_OCCURRENCES)}
    return sorted({low, high} | {edge for edge in edges if low <= edge <= high})


def horizon_problem(
    schedule: dict[str, Any],
    times: Sequence[dt.datetime],
    *,
    created: dt.datetime,
    observed: dt.datetime,
    limits: SchedulerLimits,
    lag: dt.timedelta,
    tolerance: dt.timedelta,
) -> str | None:
    """What is wrong with ``times``, the scheduled runs of a deployment with the one active ``schedule`` created at
    ``created``, read at ``observed`` (both by the harness's clock, ``tolerance`` the clocks' disagreement), or None.

    Required: each occurrence once, none due before the deployment existed, none off the schedule; and the runs not
    yet due exactly those of a pass of Prefect's scheduler from some instant since the deployment was created, a pass
    no older than ``lag`` (one loop of the target's scheduler, and then some) unless Prefect would have had no reason
    to expand the schedule again since."""
    ordered = sorted(times)
    doubled = sorted({t for t in ordered if ordered.count(t) > 1})
    if doubled:
        return (
            f"{len(doubled)} occurrences were scheduled more than once, e.g. {describe_instant(doubled[0])} "
            f"{ordered.count(doubled[0])} times; Prefect inserts each occurrence of a schedule once"
        )
    early = [t for t in ordered if t < created - tolerance]
    if early:
        return (
            f"{len(early)} runs are due before the deployment was created at {describe_instant(created)}, e.g. "
            f"{describe_instant(early[0])}; Prefect's scheduler makes no run before now"
        )
    if ordered:
        on_schedule = set(prefect_occurrences(schedule, created - tolerance, ordered[-1], n=len(ordered) + 10))
        off = [t for t in ordered if t not in on_schedule]
        if off:
            return f"{len(off)} runs are not occurrences of the schedule, e.g. {describe_instant(off[0])}"
    ahead = [t for t in ordered if t >= observed]
    low, high = created - tolerance, observed + tolerance
    stale_before = observed - lag
    for start in reversed(pass_starts(schedule, low, high, limits)):
        made = prefect_pass(schedule, start, limits)
        if start < stale_before and needs_runs(made, stale_before, limits):
            continue  # Prefect would have expanded it again since: this pass cannot be the latest
        if [t for t in made if t >= observed] == ahead:
            return None
    latest = prefect_pass(schedule, high, limits)
    expected = [t for t in latest if t >= observed]
    first = next((i for i, (a, b) in enumerate(zip(expected, ahead)) if a != b), min(len(expected), len(ahead)))
    difference = (
        f"first difference at run {first + 1}: Prefect's is "
        f"{describe_instant(expected[first]) if first < len(expected) else 'none'}, the target's "
        f"{describe_instant(ahead[first]) if first < len(ahead) else 'none'}"
    )
    return (
        f"the runs not yet due at {describe_instant(observed)} are {span(ahead)}; Prefect's scheduler keeps "
        f"{span(expected)}: the schedule's occurrences from now, {why_it_ends(latest, high, limits)}, topped up "
        f"within {lag.total_seconds():.0f} s as they fall due ({difference}). Limits: {limits.describe()}"
    )
