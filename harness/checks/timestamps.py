"""What a conformant timestamp is, and the formats real clients send.

Checks compare *instants* (timezone-aware datetimes), never strings: Prefect drops the fraction when the
microseconds are zero (``...:45Z`` next to ``...:45.123456Z``), so string order is not time order.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import re
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from harness.errors import UnexpectedAnswer

UTC = dt.timezone.utc

#: RFC 3339 date-time: ``T`` separator, seconds, optional fraction, mandatory offset.
RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}:\d{2}:\d{2})(?P<fraction>\.\d{1,9})?(?P<offset>Z|[+-]\d{2}:\d{2})$"
)
#: Anything that starts like a date: such a string is treated as a timestamp wherever it appears.
DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]|$)")

#: Datetime fields that Prefect's schemas do not declare as ``datetime`` at module level but that hold one.
EXTRA_DATETIME_KEYS = frozenset({"anchor_date", "occurred", "received", "start_date", "end_date"})
#: Version of the cached list of schema datetime fields; bump it when ``schema_datetime_keys`` changes.
DATETIME_KEYS_FORMAT = "v1"


@dataclass(frozen=True)
class TimestampProblem:
    """One datetime-valued field of a response that a real Prefect client would mis-read."""

    path: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.path} = {self.value!r}: {self.reason}"


def parse_instant(text: str) -> dt.datetime:
    """Parse an RFC 3339 timestamp into an aware datetime; raise ValueError for anything else.

    Fractions beyond microseconds are truncated, as Prefect does.
    """
    match = RFC3339.match(text)
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp with a timezone: {text!r}")
    fraction = (match["fraction"] or "")[:7]  # '.' + at most 6 digits
    offset = "+00:00" if match["offset"] == "Z" else match["offset"]
    return dt.datetime.fromisoformat(f"{match['date']}T{match['time']}{fraction}{offset}")


@lru_cache(maxsize=1)
def _client_datetime():
    """The pydantic type the pinned Prefect client validates every datetime field of an answer with."""
    from prefect.types._datetime import DateTime
    from pydantic import TypeAdapter

    return TypeAdapter(DateTime)


def read_instant(value: Any, where: str) -> dt.datetime:
    """The instant a real Prefect client reads from ``value``, the field ``where`` of the target's answer.

    Checks that need an instant (ordering, bounds, schedules) read it like the client does, so they reach a
    verdict on a server with an unusual but client-readable format (a space separator; no offset, which the
    client takes as UTC). Judging the format itself is the ``timestamps`` checks' job. A value that even the
    client cannot read, or a missing one, is the target's deviation: :class:`UnexpectedAnswer` quoting it.
    """
    if value is None:
        raise UnexpectedAnswer(f"{where} is null; a Prefect client needs a timestamp there")
    try:
        instant = _client_datetime().validate_python(value)
    except Exception:  # pydantic's ValidationError, or a type it refuses outright
        raise UnexpectedAnswer(f"{where} is {value!r}, which a Prefect client cannot read as a timestamp") from None
    instant = instant.astimezone(UTC)
    return dt.datetime(*instant.timetuple()[:6], instant.microsecond, tzinfo=UTC)


def has_non_utc_offset(text: str) -> bool:
    """True if the timestamp string carries an explicit offset other than UTC (``+05:30``, ``-0800``).

    A naive value or one with a space separator is not flagged here: the client reads those as UTC, and their
    format is judged by :func:`check_timestamp`.
    """
    match = re.search(r"(Z|[+-]\d{2}:?\d{2})$", text.strip()) if DATE_LIKE.match(text) else None
    return bool(match) and match.group(1) not in ("Z", "+00:00", "+0000")


def is_utc_designator(text: str) -> bool:
    """True if the timestamp string is expressed in UTC (``Z`` or ``+00:00``; ``-00:00`` means unknown)."""
    return text.endswith("Z") or text.endswith("+00:00")


def check_timestamp(path: str, value: Any, *, require_utc: bool) -> TimestampProblem | None:
    """Why ``value`` (the field at ``path``) is not a timestamp Prefect clients read correctly, or None."""
    if not isinstance(value, str):
        return TimestampProblem(path, value, f"a timestamp must be an ISO 8601 string, got {type(value).__name__}")
    if not RFC3339.match(value):
        if DATE_LIKE.match(value) and " " in value:
            reason = "uses a space instead of 'T' between date and time"
        elif DATE_LIKE.match(value) and not re.search(r"(Z|[+-]\d{2}:?\d{2})$", value):
            reason = "has no timezone offset (naive); Prefect returns UTC with 'Z' or '+00:00'"
        else:
            reason = "is not an RFC 3339 / ISO 8601 date-time with a timezone"
        return TimestampProblem(path, value, reason)
    try:
        parse_instant(value)
    except ValueError:
        return TimestampProblem(path, value, "has the shape of a timestamp but is not a valid date or time")
    if require_utc and not is_utc_designator(value):
        return TimestampProblem(path, value, "is not in UTC; Prefect returns 'Z' (or '+00:00' in 2.x)")
    return None


@lru_cache(maxsize=1)
def datetime_keys() -> frozenset[str]:
    """Names of every datetime-valued field in Prefect's client schemas, plus a few known extras.

    Read from the installed Prefect, so fields a new release adds are covered without editing this list. Reading
    them means importing Prefect's client schemas (about 1.5 s of CPU), so the names are kept per Prefect release
    in the cache directory: every run of the suite, and every pytest worker of a run, reads them from there.
    """
    from importlib.metadata import version

    from harness.locations import cache_dir

    cached = cache_dir() / f"datetime-fields-{DATETIME_KEYS_FORMAT}-prefect-{version('prefect')}.json"
    try:
        names = json.loads(cached.read_text())
    except (OSError, ValueError):
        names = sorted(schema_datetime_keys())
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(names))
            os.replace(partial, cached)  # atomic: concurrent runs never read half a file
        except OSError:
            pass  # a read-only cache directory costs time, not correctness
    return frozenset(names) | EXTRA_DATETIME_KEYS


def schema_datetime_keys() -> set[str]:
    """The names of the datetime-valued fields of the installed Prefect's client response schemas."""
    import datetime as _dt

    import prefect.client.schemas.objects as objects
    import prefect.client.schemas.responses as responses
    import pydantic

    def holds_datetime(annotation: Any) -> bool:
        if annotation is _dt.datetime or getattr(annotation, "__name__", "") == "DateTime":
            return True
        return any(holds_datetime(arg) for arg in typing.get_args(annotation))

    names: set[str] = set()
    for module in (objects, responses):
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, pydantic.BaseModel):
                names.update(n for n, f in obj.model_fields.items() if holds_datetime(f.annotation))
    return names


def iter_timestamps(document: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    """Every (path, value) in a JSON document that is, or should be, a timestamp.

    A field counts when its key is a known datetime field and its value is not null, or when its value is a
    string that starts like a date, whatever its key (so a new field is covered too).
    """
    keys = datetime_keys()
    if isinstance(document, dict):
        for key, value in document.items():
            child = f"{path}.{key}"
            if isinstance(value, (dict, list)):
                yield from iter_timestamps(value, child)
            elif value is not None and (key in keys or (isinstance(value, str) and DATE_LIKE.match(value))):
                yield child, value
    elif isinstance(document, list):
        for index, value in enumerate(document):
            child = f"{path}[{index}]"
            if isinstance(value, (dict, list)):
                yield from iter_timestamps(value, child)
            elif isinstance(value, str) and DATE_LIKE.match(value):
                yield child, value


def timestamp_problems(document: Any, *, require_utc: bool = True) -> list[TimestampProblem]:
    """All problems with the timestamps in a JSON document (empty when it conforms)."""
    problems = []
    for path, value in iter_timestamps(document):
        problem = check_timestamp(path, value, require_utc=require_utc)
        if problem:
            problems.append(problem)
    return problems


# --- formats that clients send -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFormat:
    """One way of writing an instant that a real client sends or that Prefect accepts."""

    id: str
    description: str
    offset_minutes: int | None  # None: naive (no offset), which Prefect reads as UTC
    fraction_digits: int
    separator: str = "T"
    utc_designator: str = "+00:00"  # how offset 0 is written: 'Z' or '+00:00'
    colon_in_offset: bool = True
    #: How far the stored instant may be from :meth:`expected` (rounding sub-microsecond digits is tolerated).
    tolerance: dt.timedelta = dt.timedelta(0)

    def render(self, instant: dt.datetime) -> str:
        """``instant`` written in this format (the instant must be representable: see :meth:`expected`)."""
        local = instant.astimezone(dt.timezone(dt.timedelta(minutes=self.offset_minutes or 0)))
        text = local.strftime(f"%Y-%m-%d{self.separator}%H:%M:%S")
        if self.fraction_digits:
            nanos = f"{local.microsecond:06d}789"  # sub-microsecond digits a server must truncate, not round up
            text += "." + nanos[: self.fraction_digits]
        if self.offset_minutes is None:
            return text
        if self.offset_minutes == 0:
            return text + self.utc_designator
        sign = "+" if self.offset_minutes > 0 else "-"
        hours, minutes = divmod(abs(self.offset_minutes), 60)
        return text + f"{sign}{hours:02d}{':' if self.colon_in_offset else ''}{minutes:02d}"

    def expected(self, instant: dt.datetime) -> dt.datetime:
        """The instant the server must store when sent :meth:`render` of ``instant`` (fraction truncated)."""
        if self.fraction_digits >= 6:
            return instant
        keep = 10 ** (6 - self.fraction_digits)
        return instant.replace(microsecond=instant.microsecond // keep * keep)


INPUT_FORMATS: tuple[InputFormat, ...] = (
    InputFormat("utc-z", "UTC with 'Z', microseconds", 0, 6, utc_designator="Z"),
    InputFormat("utc-offset", "UTC with '+00:00', microseconds", 0, 6),
    InputFormat("utc-z-no-fraction", "UTC with 'Z', whole seconds", 0, 0, utc_designator="Z"),
    InputFormat("utc-z-millis", "UTC with 'Z', milliseconds", 0, 3, utc_designator="Z"),
    InputFormat(
        "utc-z-nanos",
        "UTC with 'Z', 9 fraction digits",
        0,
        9,
        utc_designator="Z",
        tolerance=dt.timedelta(microseconds=1),
    ),
    InputFormat("space-separator", "space separator, '+00:00', as Prefect clients send scheduled_before", 0, 6, " "),
    InputFormat("positive-offset", "'+05:30' offset", 330, 6),
    InputFormat("negative-offset", "'-08:00' offset", -480, 6),
    InputFormat("offset-without-colon", "'-0800' offset", -480, 3, colon_in_offset=False),
    InputFormat("offset-crossing-midnight", "'+14:00' offset (the local date is the next day)", 840, 6),
    InputFormat("naive", "no offset; Prefect reads it as UTC", None, 6),
)

#: Inputs Prefect rejects with 422; a server must answer 4xx (never 2xx, never 5xx).
INVALID_TIMESTAMPS: tuple[tuple[str, str], ...] = (
    ("garbage", "not-a-timestamp"),
    ("month-13", "2026-13-01T00:00:00Z"),
    ("hour-25", "2026-01-01T25:00:00Z"),
    ("empty", ""),
)


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def describe_instant(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: An instant a day ahead with microseconds, at 10:xx UTC so that a +14:00 offset crosses midnight.
def future_instant(microsecond: int = 123456) -> dt.datetime:
    tomorrow = dt.datetime.now(UTC) + dt.timedelta(days=1)
    return tomorrow.replace(hour=10, minute=17, second=42, microsecond=microsecond)
