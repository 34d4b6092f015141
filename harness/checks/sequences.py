"""Comparing ordered results of the polling endpoints, and saying where they first differ.

Failure messages show the expected and the actual sequence of (run label, instant) up to and including the
first mismatch, so a server author sees at once whether runs are missing, extra, or out of order.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Sequence

from harness.checks.timestamps import describe_instant

Entry = tuple[str, dt.datetime]


def first_mismatch(expected: Sequence[Entry], actual: Sequence[Entry]) -> int | None:
    """Index of the first difference between two sequences, or None if they are equal."""
    for index, (want, got) in enumerate(zip(expected, actual)):
        if want != got:
            return index
    return None if len(expected) == len(actual) else min(len(expected), len(actual))


def describe(entries: Iterable[Entry]) -> str:
    return "[" + ", ".join(f"{label}@{describe_instant(instant)}" for label, instant in entries) + "]"


def sequence_message(what: str, expected: Sequence[Entry], actual: Sequence[Entry], context: int = 3) -> str | None:
    """None when equal; otherwise a message trimmed to the first mismatch (with a little context before it)."""
    index = first_mismatch(expected, actual)
    if index is None:
        return None
    start = max(0, index - context)
    cut = slice(start, index + 1)
    lead = "..., " if start else ""
    return (
        f"{what}: first difference at position {index} "
        f"(expected {len(expected)} runs, got {len(actual)}):\n"
        f"  expected {lead}{describe(expected[cut])}\n"
        f"  actual   {lead}{describe(actual[cut])}"
    )


def is_non_decreasing(instants: Sequence[dt.datetime]) -> int | None:
    """Index of the first instant earlier than its predecessor, or None if the order never goes back."""
    for index in range(1, len(instants)):
        if instants[index] < instants[index - 1]:
            return index
    return None
