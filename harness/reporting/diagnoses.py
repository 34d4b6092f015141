"""Diagnoses: the classic mistakes of a port, named in one line when a failure's own evidence shows one.

A failure message quotes what the target answered; some answers are the fingerprint of a mistake every port author
makes once: a time stored as its wall time with its offset dropped, a time written in the server's local zone,
precision cut to milliseconds or seconds, instants compared as strings, a schedule expanded in the wrong zone,
naive datetimes, a wrong clock. A diagnosis is read from the numbers in the message alone (never guessed from a
check's name), so it names a mistake only where the arithmetic proves it; ``make test`` shows each one on the
deviating targets that make it, and none on any other deviation or on the reference.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

INSTANT = r"\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:\d{2})"
#: Zone offsets are whole quarter hours, from -12 h to +14 h.
QUARTER_HOUR, WIDEST_OFFSET = 900.0, 14 * 3600.0
MONTH = dt.timedelta(days=30)


@dataclass(frozen=True)
class Diagnosis:
    #: A short name, stable for tests and reports ("offset dropped").
    name: str
    #: The one line a report puts at the top of the failure's cause.
    line: str


def parse(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def has_offset(value: str) -> bool:
    return bool(re.search(r"(Z|[+-]\d{2}:?\d{2})$", value))


def zone_offset(seconds: float, tolerance: float = 5.0) -> bool:
    """A non-zero whole number of quarter hours (within ``tolerance`` s), no wider than any zone's offset."""
    quarters = round(seconds / QUARTER_HOUR)
    return quarters != 0 and abs(seconds - quarters * QUARTER_HOUR) <= tolerance and abs(seconds) <= WIDEST_OFFSET


def hours(seconds: float) -> str:
    sign, seconds = ("+" if seconds > 0 else "-"), abs(seconds)
    whole, minutes = divmod(round(seconds / 60), 60)
    return f"{sign}{whole} h" + (f" {minutes} min" if minutes else "")


def fraction_digits(raw: str) -> int:
    found = re.search(r"\.(\d+)", raw)
    return len(found.group(1)) if found else 0


def truncation(raw: str) -> Diagnosis | None:
    digits = fraction_digits(raw)
    if digits >= 6:
        return None
    to = "whole seconds" if digits == 0 else "milliseconds" if digits == 3 else f"{digits} fraction digits"
    return Diagnosis(
        "precision truncated",
        f"Precision truncated to {to}: the target keeps times to {to} ({raw!r}); "
        "Prefect keeps microseconds, and clients order and match times by them. Hint: store "
        "timestamps with microsecond precision (timestamp(6), or an integer of microseconds)",
    )


def stored_instant(message: str) -> Diagnosis | None:
    """``sent 'X'; ... is 'R' = S, expected the instant E (off by N µs)`` (input formats, round trips)."""
    found = re.search(
        rf"(?:sent '(?P<sent>[^']+)'; )?.*? is '(?P<raw>[^']+)' = (?P<stored>{INSTANT}), expected the "
        rf"instant (?P<expected>{INSTANT}) \(off by (?P<off>[+-]\d+) µs\)",
        message,
    )
    if not found:
        return None
    off = int(found["off"]) / 1e6
    sent = found["sent"] or ""
    stored, expected = parse(found["stored"]), parse(found["expected"])
    if sent and has_offset(sent) and not sent.endswith(("Z", "+00:00")) and stored is not None:
        wall = parse(re.sub(r"(Z|[+-]\d{2}:?\d{2})$", "", sent))
        if wall == stored:
            return Diagnosis(
                "offset dropped",
                f"An offset dropped: {sent!r} was stored as {found['stored']}, its wall "
                f"time read as UTC ({hours(off)} off). Hint: convert a time with an offset to UTC before "
                "storing it; never strip the offset",
            )
    if sent and not has_offset(sent) and zone_offset(off):
        return Diagnosis(
            "naive read as local time",
            f"A time without offset read in a local zone: {sent!r} was "
            f"stored {hours(off)} off; Prefect reads a naive time as UTC. Hint: treat a time without "
            "offset as UTC, never as the server's local time",
        )
    if -1.0 < off < 0 and expected is not None and stored is not None:
        return truncation(found["raw"])
    return None


def server_set_time(message: str) -> Diagnosis | None:
    """``updated is 'R', S s before the request was sent`` (times the server sets) and ``timestamp is 'R', equal
    to ...`` (state times)."""
    found = re.search(
        r"(?P<field>\w+) is '(?P<raw>[^']+)', (?P<secs>[\d.]+) s (?P<way>before the request was sent|"
        r"after the answer came)",
        message,
    )
    if found:
        seconds = float(found["secs"])
        if zone_offset(seconds):
            return Diagnosis(
                "local zone",
                f"Times stored in a local zone: {found['field']} is {hours(seconds)[1:]} "
                f"{'behind' if found['way'].startswith('before') else 'ahead of'} the moment it was set, "
                "a whole zone offset. Hint: set times from the server's clock in UTC (a local time "
                "written as UTC is off by the zone's offset)",
            )
        if seconds < 1.0:
            return truncation(found["raw"])
    equal = re.search(r"timestamp is '(?P<raw>[^']+)', equal to", message)
    if equal:
        return truncation(equal["raw"])
    return None


#: The widest skew the clock check lets pass (``harness.checks.server_times.MAX_CLOCK_OFFSET``; a test holds them
#: equal): a smaller offset, quoted beside another check's failure, is no clock skew.
SKEW_SECONDS = 3.0


def clock(message: str) -> Diagnosis | None:
    """``the target's clock is X s from the harness's ... (± U s); its Date header says L s to H s``: a skew only
    where X is beyond the clock check's threshold by more than its uncertainty."""
    found = re.search(
        r"the target's clock is (?P<off>[+-][\d.]+) s from the harness's.*?\(± (?P<unc>[\d.]+) s\); "
        r"its Date header says (?P<low>[+-][\d.]+) s to (?P<high>[+-][\d.]+) s",
        message,
        re.S,
    )
    if not found:
        return None
    off, low, high = float(found["off"]), float(found["low"]), float(found["high"])
    if abs(off) <= SKEW_SECONDS + float(found["unc"]):
        return None
    if low - 3 <= off <= high + 3:
        return Diagnosis(
            "clock skew",
            f"A clock skew: the server's clock is {off:+.1f} s off, its Date header too. "
            "Hint: synchronise the server's clock (NTP); clients compare the times it sets with theirs",
        )
    if zone_offset(off) and low - 3 <= 0 <= high + 3:
        return Diagnosis(
            "local zone",
            f"Times stored in a local zone: created is {hours(off)} off while the "
            "server's Date header is right. Hint: set times from the server's clock in UTC",
        )
    return None


def string_comparison(message: str) -> Diagnosis | None:
    """A filter by the exact instant a run is stored at, sent in another but unambiguous form (an explicit UTC
    offset, or another number of fraction digits), that returned nothing."""
    found = re.search(
        r"after_ = before_ = '(?P<sent>[^']+)' \(the instant (?P<instant>\S+)\) should return the run "
        r"scheduled at exactly that instant \(stored as '(?P<stored>[^']+)'\); it returned 0 runs",
        message,
    )
    if not found:
        return None
    sent, stored = found["sent"], found["stored"]
    unambiguous = sent.endswith(("Z", "+00:00")) and "T" in sent
    if unambiguous and sent != stored and parse(sent) == parse(stored):
        return Diagnosis(
            "compared as strings",
            f"Instants compared as strings: {sent!r} is the instant stored as "
            f"{stored!r}, but the filter did not match it. Hint: parse both sides and compare instants",
        )
    return None


def naive_output(message: str) -> Diagnosis | None:
    if "has no timezone offset (naive)" in message:
        return Diagnosis(
            "naive datetimes",
            "Naive datetimes: the target writes times without an offset, which "
            "Prefect's clients must guess the zone of. Hint: write every time in UTC with 'Z'",
        )
    return None


def schedule_zone(message: str) -> Diagnosis | None:
    """``runs of {... 'timezone': 'Z' ...}: first difference ... expected [..@E, ...] actual [..@A, ...]``: the first
    runs that differ are off by exactly the zone's UTC offset (the schedule expanded in UTC) or by exactly its
    daylight-saving shift (expanded in a fixed offset). Any other offset names no mistake: a series shifted by an
    ignored anchor also lands on whole quarter hours."""
    found = re.search(
        r"runs of \{.*?'timezone': '(?P<zone>[^']+)'.*?first difference at position (?P<at>\d+).*?"
        r"expected \[(?P<expected>[^\]]*)\].*?actual\s+\[(?P<actual>[^\]]*)\]",
        message,
        re.S,
    )
    if not found:
        return None
    at = int(found["at"])
    expected = re.findall(rf"@({INSTANT})", found["expected"])
    actual = re.findall(rf"@({INSTANT})", found["actual"])
    if at >= len(expected) or at >= len(actual):
        return None
    one, other = parse(expected[at]), parse(actual[at])
    try:
        zone = ZoneInfo(found["zone"])
    except (ZoneInfoNotFoundError, ValueError):
        return None
    if one is None or other is None:
        return None
    off = (other - one).total_seconds()
    # The zone's offsets over a year around the run: two when it has daylight saving time.
    offsets = {(one + k * MONTH).astimezone(zone).utcoffset().total_seconds() for k in range(-6, 7)}
    if off and off == one.astimezone(zone).utcoffset().total_seconds():
        return Diagnosis(
            "schedule zone ignored",
            f"A schedule's time zone ignored: its runs are {hours(off)} off, "
            f"the wall times of {found['zone']!r} read as UTC. Hint: expand schedules in their own "
            "timezone, as Prefect does",
        )
    if len(offsets) == 2 and abs(off) == abs(max(offsets) - min(offsets)):
        return Diagnosis(
            "daylight saving time ignored",
            f"A schedule's daylight saving time ignored: its runs are "
            f"{hours(off)} off, {found['zone']!r}'s daylight-saving shift, as if expanded in a fixed "
            "offset. Hint: expand schedules in their own timezone, daylight saving time included",
        )
    return None


#: Tried in order; the first that reads the message names the mistake.
RULES: tuple[Callable[[str], Diagnosis | None], ...] = (
    stored_instant,
    server_set_time,
    clock,
    string_comparison,
    naive_output,
    schedule_zone,
)


def diagnose(message: str) -> Diagnosis | None:
    """The classic mistake the message's evidence proves, or None."""
    for rule in RULES:
        if (diagnosis := rule(message)) is not None:
            return diagnosis
    return None
