"""The times a server sets by itself (``created``, ``updated``, a state's ``timestamp``, ``start_time``, ...) and the
target's clock they are read against.

A client never sends these: the server stamps them from its own clock while it handles a request. So each one must
lie within the window of the request that set it, as the harness saw that window (sent, answered) shifted by how
far the target's clock is from the harness's. That shift is measured once per process by :func:`measure_clock`,
from the ``created`` of an object the target has just made (precise to half a round trip) and cross-checked with
the HTTP ``Date`` header (whole seconds): a server on a wrong clock is told so once, by the clock check, and every
other check still judges its times against its own clock instead of failing forty times for one cause.

Measured on Prefect 3.9.1 (``make test`` keeps it true): ``created`` has microseconds; ``updated`` too where the
server writes it with Python's clock, and milliseconds where SQLite's ``now()`` writes it on an update; a
deployment's ``updated`` is taken a few milliseconds *before* its ``created`` when it is made, a worker's
``last_heartbeat_time`` before its ``created``, a run's first state's ``timestamp`` before the run's ``created``,
so only a change (PATCH, ``set_state``) orders ``updated`` after ``created``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from harness.checks.timestamps import UTC, describe_instant, read_instant
from harness.errors import UnexpectedAnswer
from harness.target.api import Answer

T = TypeVar("T")

#: A clock further than this from the harness's (seconds) fails ``timestamps/target_clock_agrees_with_the_harness``.
MAX_CLOCK_OFFSET = 3.0
#: Added to every window: Prefect on SQLite keeps an updated ``updated`` to the millisecond (truncated), and float
#: arithmetic on instants needs a little room.
SLACK = dt.timedelta(milliseconds=5)
#: How many objects :func:`measure_clock` creates; the one answered fastest gives the measurement.
CLOCK_SAMPLES = 3


@dataclass(frozen=True)
class Window:
    """When the harness sent a request and when its answer arrived, by the harness's clock."""

    what: str
    sent: dt.datetime
    answered: dt.datetime

    @property
    def seconds(self) -> float:
        return (self.answered - self.sent).total_seconds()


@dataclass(frozen=True)
class TargetClock:
    """How far the target's clock is ahead of the harness's (negative: behind), and how sure that is."""

    offset: float
    uncertainty: float
    #: The offset the ``Date`` header says, as an interval (low, high) in seconds; None when the target sends none.
    date_offset: tuple[float, float] | None
    #: The request whose answer measured it, and the ``created`` it answered.
    source: str
    created: str

    def describe(self) -> str:
        return f"the target's clock is {seconds(self.offset)} s from the harness's, {self.evidence()}"

    def evidence(self) -> str:
        by_date = (
            f"; its Date header says {self.date_offset[0]:+.1f} s to {self.date_offset[1]:+.1f} s"
            if self.date_offset
            else "; it sends no Date header"
        )
        return f"by the created {self.created!r} of {self.source} (± {self.uncertainty:.3f} s){by_date}"

    def bounds(self, window: Window) -> tuple[dt.datetime, dt.datetime]:
        """The earliest and latest instant, by the target's clock, at which it can have handled ``window``'s request."""
        margin = dt.timedelta(seconds=self.uncertainty) + SLACK
        shift = dt.timedelta(seconds=self.offset)
        return window.sent + shift - margin, window.answered + shift + margin


def seconds(value: float) -> str:
    """A signed number of seconds to the millisecond, never "-0.000"."""
    return f"{value:+.3f}" if round(value, 3) else "+0.000"


def during(what: str, act: Callable[[], T]) -> tuple[T, Window]:
    """Do ``act`` (one request, or a create helper's few) and return its result with the window it took.

    Transient answers are retried inside the window: the time the target finally set lies in it all the same.
    """
    sent = dt.datetime.now(UTC)
    result = act()
    return result, Window(what, sent, dt.datetime.now(UTC))


def date_header_offset(answer: Answer, window: Window) -> tuple[float, float] | None:
    """The interval the target's clock offset lies in by its ``Date`` header (None without a readable one).

    The header has whole seconds and uvicorn refreshes it once a second, so the target's clock read between the
    header's second and two seconds after it while the harness's read between sending and the answer.
    """
    try:
        stamp = email.utils.parsedate_to_datetime(answer.date) if answer.date else None
    except (TypeError, ValueError):
        return None
    if stamp is None or stamp.tzinfo is None:
        return None
    return ((stamp - window.answered).total_seconds(), (stamp - window.sent).total_seconds() + 2.0)


def measure_clock(create: Callable[[int], tuple[Answer, Window]]) -> TargetClock:
    """Measure the target's clock from the ``created`` of :data:`CLOCK_SAMPLES` objects that ``create(i)`` makes
    (its answer, and the window it took).

    The fastest round trip wins: the target stamped ``created`` somewhere inside it, so the midpoint is off by at
    most half of it.
    """
    best: TargetClock | None = None
    for index in range(CLOCK_SAMPLES):
        answer, window = create(index)
        document = answer.expect((200, 201), what=f"creating an object to read the target's clock by: {window.what}")
        created = read_instant(document.get("created"), f"{window.what} created")
        midpoint = window.sent + (window.answered - window.sent) / 2
        clock = TargetClock(
            offset=(created - midpoint).total_seconds(),
            uncertainty=window.seconds / 2,
            date_offset=date_header_offset(answer, window),
            source=window.what,
            created=document.get("created"),
        )
        if best is None or clock.uncertainty < best.uncertainty:
            best = clock
    assert best is not None
    return best


def clock_problem(clock: TargetClock) -> str | None:
    """Why the target's clock disagrees with the harness's, or None. When its ``created`` and its ``Date`` header
    disagree, ``created`` is at fault (a local time written as UTC, say), not the clock, and the message says so."""
    if clock.date_offset is not None:
        low, high = clock.date_offset
        if (
            not low - clock.uncertainty - MAX_CLOCK_OFFSET
            <= clock.offset
            <= high + clock.uncertainty + MAX_CLOCK_OFFSET
        ):
            return (
                f"the target's created times and its Date header disagree by more than {MAX_CLOCK_OFFSET:.0f} s: "
                f"{clock.describe()}. Hint: created must come from the server's clock in UTC, as the Date header "
                "does (a local time written as UTC is off by the zone's offset)"
            )
    if abs(clock.offset) > MAX_CLOCK_OFFSET + clock.uncertainty:
        return (
            f"the target's clock is {seconds(clock.offset)} s from the harness's (more than {MAX_CLOCK_OFFSET:.0f} s), "
            f"{clock.evidence()}. Every time the server sets (created, updated, state timestamps, start_time) is "
            "judged against its own clock, so they are not failed for this, but clients compare them with their "
            "own clocks: a run looks late or early by as much. Hint: synchronise the server's clock (NTP)"
        )
    return None


def window_problem(field: str, value: Any, window: Window, clock: TargetClock) -> str | None:
    """Why ``value`` (the target's ``field``, set while it handled ``window``'s request) is not a time within it."""
    instant = read_instant(value, field)
    earliest, latest = clock.bounds(window)
    if earliest <= instant <= latest:
        return None
    side = "before the request was sent" if instant < earliest else "after its answer arrived"
    gap = (earliest - instant) if instant < earliest else (instant - latest)
    return (
        f"{field} is {value!r}, {gap.total_seconds():.3f} s {side}: the server set it while it handled "
        f"{window.what}, between {describe_instant(earliest)} and {describe_instant(latest)} by the target's clock. "
        f"Hint: set {field.rsplit(' ', 1)[-1]} from the server's clock, in UTC, when the request is handled"
    )


def order_problem(
    earlier: tuple[str, Any],
    later: tuple[str, Any],
    *,
    strictly: bool = False,
    tolerance: dt.timedelta = dt.timedelta(0),
    hint: str = "",
) -> str | None:
    """Why the time ``later`` = (field, value) is not after ``earlier`` (or equal, unless ``strictly``).

    ``tolerance`` allows ``later`` that much before ``earlier`` (never with ``strictly``)."""
    (first_field, first), (second_field, second) = earlier, later
    a, b = read_instant(first, first_field), read_instant(second, second_field)
    if (b > a) if strictly else (b >= a - tolerance):
        return None
    relation = "equal to" if a == b else f"{(a - b).total_seconds():.6f} s before"
    wanted = "after" if strictly else "at or after"
    return f"{second_field} is {second!r}, {relation} {first_field} {first!r}; it must be {wanted} it" + (
        f". Hint: {hint}" if hint else ""
    )


def same_instant_problem(field: str, value: Any, expected_field: str, expected: Any, *, reason: str) -> str | None:
    """Why ``value`` does not name the same instant as ``expected`` (to the microsecond); ``reason`` says why it
    must."""
    a, b = read_instant(value, field), read_instant(expected, expected_field)
    if a == b:
        return None
    return (
        f"{field} is {value!r}, but {expected_field} is {expected!r} ({(a - b).total_seconds() * 1e6:+.0f} µs): "
        f"{reason}"
    )


def seconds_field(document: dict[str, Any], field: str, source: str) -> float:
    """A duration field (``total_run_time``, ``estimated_start_time_delta``: seconds, a JSON number) of an answer."""
    value = document.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnexpectedAnswer(
            f"{source} answered {field} = {value!r}; Prefect's clients read it as seconds (a number)"
        )
    return float(value)


class TimeFindings:
    """The problems one check finds with the times a target set, collected so its failure lists them all at once."""

    def __init__(self, clock: TargetClock) -> None:
        self.clock = clock
        self.problems: list[str] = []

    def add(self, problem: str | None) -> None:
        if problem:
            self.problems.append(problem)

    def set_during(self, source: str, document: dict[str, Any], fields: tuple[str, ...], window: Window) -> None:
        """Each of ``fields`` of ``document`` (what ``source`` answered) was set while ``window``'s request ran."""
        for field in fields:
            self.add(window_problem(f"{source} {field}", document.get(field), window, self.clock))

    def not_before(self, source: str, document: dict[str, Any], earlier: str, later: str) -> None:
        """``document[later]`` is not before ``document[earlier]`` (Prefect on SQLite keeps an updated ``updated``
        to the millisecond, so it may read up to 1 ms before a ``created`` of the same millisecond)."""
        self.add(
            order_problem(
                (f"{source} {earlier}", document.get(earlier)),
                (f"{source} {later}", document.get(later)),
                tolerance=dt.timedelta(milliseconds=1),
                hint=f"{later} is set when the object is stored or changed, never before {earlier}",
            )
        )

    def moved(
        self, before: tuple[str, dict[str, Any]], after: tuple[str, dict[str, Any]], field: str, window: Window
    ) -> None:
        """``field`` moved forward from ``before`` to ``after`` (each a source and its answer), to a time within the
        window of the change between them, and ``created`` stayed as it was."""
        (first_source, first), (second_source, second) = before, after
        self.add(
            order_problem(
                (f"{first_source} {field}", first.get(field)),
                (f"{second_source} {field}", second.get(field)),
                strictly=True,
                hint=f"{window.what} changed the object, so its {field} must move on",
            )
        )
        self.add(window_problem(f"{second_source} {field}", second.get(field), window, self.clock))
        if "created" in first and first.get("created") != second.get("created"):
            self.add(
                same_instant_problem(
                    f"{second_source} created",
                    second.get("created"),
                    f"{first_source} created",
                    first.get("created"),
                    reason=f"{window.what} must not change it",
                )
            )

    def assert_none(self, what: str) -> None:
        assert not self.problems, (
            f"{what}: {len(self.problems)} problem(s):\n"
            + "\n".join(f"  - {p}" for p in self.problems)
            + f"\n  ({self.clock.describe()})"
        )
