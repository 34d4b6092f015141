"""Differential comparison: the same call on the target and on the reference, answers compared after normalising
what legitimately differs between two servers.

Hand-written checks find the deviations someone thought of; comparing whole answers with Prefect's own finds
the rest (a renamed field, a default that differs, a state name in another case). What may differ, and how it
is normalised before comparing:

* identifiers: every UUID becomes ``<id#n>``, numbered by first appearance in this server's answers, so
  references between objects (a run's ``deployment_id``) still have to agree;
* names this run chose differ per server (each server gets its own), and so do the names Prefect generates for
  flow runs: both become ``<name:role>`` once the sequence has learnt them (:meth:`Normaliser.learn`);
* values that depend on when the server handled the call (``created``, ``updated``, a state's ``timestamp``,
  run names Prefect generates, durations...): only their presence and JSON type are compared;
* every other datetime is compared as an instant (``Z`` and ``+00:00`` are the same answer).

A field the target adds is not a difference (clients ignore it); a field it lacks, or a value that differs,
is. Imports: :mod:`harness.checks.timestamps` and the ``Answer`` of :mod:`harness.target.api`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from harness.checks.timestamps import DATE_LIKE, parse_instant
from harness.target.api import Answer

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

#: Fields whose value depends on when (or by which server) the call was handled: compared by presence and type.
VOLATILE = frozenset(
    {
        "created",
        "updated",
        "timestamp",
        "start_time",
        "end_time",
        "expected_start_time",
        "estimated_run_time",
        "estimated_start_time_delta",
        "total_run_time",
        "last_polled",
        "last_heartbeat_time",
        # A WAIT's delay counts down to the run's scheduled time from the moment each server answered.
        "delay_seconds",
    }
)


@dataclass(frozen=True)
class Difference:
    """One place where the target's answer differs from the reference's."""

    path: str
    reference: str
    target: str

    def describe(self) -> str:
        return f"{self.path}: reference {self.reference}, target {self.target}"


class Normaliser:
    """Turns one server's answers into comparable documents; one per server, used for its whole sequence."""

    def __init__(self, names: Mapping[str, str]) -> None:
        #: The names this run gave the server's objects, by role (``{"flow-a1b2": "flow"}``).
        self.names = dict(names)
        self.ids: dict[str, str] = {}

    def learn(self, value: str, role: str) -> None:
        """Treat ``value`` (a name the server generated, e.g. a flow run's) as this server's name for ``role``."""
        self.names[value] = role

    def __call__(self, document: Any, key: str = "") -> Any:
        if isinstance(document, dict):
            # Sorted, so that ids are numbered in the same order whatever order the server wrote its fields in.
            return {k: self(document[k], k) for k in sorted(document)}
        if isinstance(document, list):
            return [self(item, key) for item in document]
        if isinstance(document, str):
            if document in self.names:
                return f"<name:{self.names[document]}>"
            if UUID.match(document):
                return self.ids.setdefault(document, f"<id#{len(self.ids) + 1}>")
            if key in VOLATILE:
                return "<string>"
            if DATE_LIKE.match(document):
                try:
                    return "<instant " + parse_instant(document).isoformat() + ">"
                except ValueError:
                    return document
        elif key in VOLATILE and document is not None:
            return f"<{type(document).__name__}>"
        return document


def differences(reference: Any, target: Any, path: str = "$") -> list[Difference]:
    """Where the normalised ``target`` answer differs from the normalised ``reference`` answer; extra fields on
    the target are not differences."""
    if isinstance(reference, dict) and isinstance(target, dict):
        found = []
        for key, value in reference.items():
            if key not in target:
                found.append(Difference(f"{path}.{key}", _show(value), "has no such field"))
            else:
                found += differences(value, target[key], f"{path}.{key}")
        return found
    if isinstance(reference, list) and isinstance(target, list):
        if len(reference) != len(target):
            return [Difference(path, f"{len(reference)} items", f"{len(target)} items")]
        return [d for index, (r, t) in enumerate(zip(reference, target)) for d in differences(r, t, f"{path}[{index}]")]
    if reference != target:
        return [Difference(path, _show(reference), _show(target))]
    return []


#: At most this many differences are quoted in one failure (the rest are counted).
QUOTED = 5


def assert_same_answer(reference: Answer, expected: Any, target: Answer, actual: Any) -> None:
    """Fail unless the target's answer has the reference's status class (2xx, 4xx) and, when both succeeded, the
    same normalised body (``expected``, ``actual``: :class:`Normaliser` output, None for no body to compare)."""
    assert target.status // 100 == reference.status // 100, (
        f"{target.method} {target.path} answered {target.status} where Prefect answers {reference.status}: "
        f"{target.describe()}. Hint: the reference's answer was {reference.describe()}"
    )
    found = differences(expected, actual) if expected is not None else []
    assert not found, (
        f"the answer to {target.method} {target.path} differs from Prefect's in {len(found)} "
        f"place{'' if len(found) == 1 else 's'}: "
        + "; ".join(d.describe() for d in found[:QUOTED])
        + (f" (and {len(found) - QUOTED} more)" if len(found) > QUOTED else "")
        + ". Hint: real clients were written against Prefect's answers; ids, names, times of handling and datetime "
        "formats are already normalised, so each of these is a real difference"
    )


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."
