"""Failures grouped by cause, so a target with one bug shows one heading, not forty identical blocks.

Two failures share a cause when their messages are the same once what legitimately differs between checks is
blanked out: quoted values, instants, ids, numbers, run-prefixed names, the request line and JSON paths. What
remains is the *kind* of answer the target gave ("uses a space instead of 'T'", "expected 201 from ... -> 422").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.reporting.results import CheckResult

_BLANKS = (
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?"), "<instant>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"\bpc-\d{8}t\d{6}-[0-9a-f]{6}\S*"), "<name>"),
    (re.compile(r"\b(GET|POST|PATCH|PUT|DELETE|WS) /\S*"), "<request>"),
    (re.compile(r"\$[\w.\[\]]*"), "$…"),
    (re.compile(r"[+-]?\d+(\.\d+)?"), "N"),
    (re.compile(r"\s+"), " "),
)


def signature(message: str) -> str:
    """The message with the particulars of one check blanked out: equal signatures, one cause."""
    lines = []
    for line in message.strip().splitlines():
        for pattern, blank in _BLANKS:
            line = pattern.sub(blank, line)
        if line.strip() and line.strip() not in lines:
            lines.append(line.strip())
    return "\n".join(sorted(lines))


@dataclass
class Cause:
    """Checks that failed the same way; ``example`` is the first one's message, shown once for all of them."""

    status: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def example(self) -> str:
        return self.results[0].message.strip()

    @property
    def diagnosis(self) -> str:
        """The first diagnosis among the cause's checks: one mistake, named once at the top."""
        return next((r.diagnosis for r in self.results if r.diagnosis), "")

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.results]


def group_by_cause(results: list[CheckResult]) -> list[Cause]:
    """Failing results grouped by status and message signature, the largest group first."""
    groups: dict[tuple[str, str], Cause] = {}
    for result in results:
        key = (result.status, signature(result.message))
        groups.setdefault(key, Cause(result.status)).results.append(result)
    return sorted(groups.values(), key=lambda c: (-len(c.results), c.ids[0]))
