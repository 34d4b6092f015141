"""The claim a run ends with: per profile, whether the target is conformant to the reference's Prefect release.

A port's author publishes one honest line ("conformant to Prefect 3.9.1 (API 0.8.4) for core, serve and workers")
and a badge. The claim is the truth about the run, not about the gate: an expectations file keeps a gate green,
but a known failure still makes its profile ``partial``, and ``core`` (not waivable) ``not conformant``. A
``should`` check that did not pass (a warning) leaves its profile conformant, and says so.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.reporting.catalogue import load_catalogue
from harness.reporting.results import CheckResult

#: Statuses of a check that did not behave as on the reference (whatever the gate made of it).
DIFFERED = frozenset({"failed", "unsupported", "expected-failure", "pending"})
#: Statuses that say nothing about the target: the check did not apply or did not run.
NOT_COUNTED = frozenset({"n/a", "skipped"})


@dataclass
class ProfileClaim:
    profile: str
    title: str
    #: conformant, partial, not supported, not conformant, or no verdict (a check errored)
    verdict: str
    passed: int
    total: int
    known: int = 0  # differed as the expectations file says (expected failures)
    warnings: int = 0
    pending: int = 0
    errors: int = 0

    @property
    def text(self) -> str:
        if self.verdict == "no verdict":
            return f"no verdict ({self.errors} {'error' if self.errors == 1 else 'errors'})"
        if self.verdict == "conformant":
            return "conformant" + (
                f" ({self.warnings} {'warning' if self.warnings == 1 else 'warnings'})" if self.warnings else ""
            )
        known = f"; {self.known} known {'failure' if self.known == 1 else 'failures'}" if self.known else ""
        pending = f"; {self.pending} pending" if self.pending else ""
        if self.verdict == "not supported":
            return f"not supported (0 of {self.total}{known}{pending})"
        return f"{self.verdict} ({self.passed} of {self.total}{known}{pending})"


@dataclass
class Claim:
    prefect_version: str
    api_version: str
    suite_version: str
    profiles: list[ProfileClaim] = field(default_factory=list)
    #: False when the run left checks out (-k, -m, a rerun): its claim covers only the checks it ran.
    complete: bool = True

    @property
    def conformant(self) -> list[str]:
        return [p.profile for p in self.profiles if p.verdict == "conformant"]

    @property
    def line(self) -> str:
        """The sentence a server's README can carry."""
        head = f"Prefect {self.prefect_version} (API {self.api_version}), prefect-conformance {self.suite_version}"
        if not self.profiles:
            return f"{head}: no profile was tested"
        parts = []
        if self.conformant:
            parts.append("conformant for " + join(self.conformant))
        parts += [f"{p.profile}: {p.text}" for p in self.profiles if p.verdict != "conformant"]
        return f"{head}: " + "; ".join(parts) + ("" if self.complete else " (only the checks this run selected)")

    def as_dict(self) -> dict:
        return {
            "prefect_version": self.prefect_version,
            "api_version": self.api_version,
            "suite_version": self.suite_version,
            "complete": self.complete,
            "line": self.line,
            "profiles": [{**asdict(p), "text": p.text} for p in self.profiles],
        }


def join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def profile_claim(name: str, results: list[CheckResult]) -> ProfileClaim | None:
    """The claim for one profile from its checks' results, or None when none of them ran."""
    profile = load_catalogue().profile(name)
    counted = [r for r in results if r.status not in NOT_COUNTED]
    if not counted:
        return None
    passed = sum(1 for r in counted if r.status in ("passed", "unexpected-pass", "warning"))
    warnings = sum(1 for r in counted if r.status == "warning")
    known = sum(1 for r in counted if r.status == "expected-failure")
    pending = sum(1 for r in counted if r.status == "pending")
    errors = sum(1 for r in counted if r.status == "error")
    differed = sum(1 for r in counted if r.status in DIFFERED)
    if errors:
        verdict = "no verdict"
    elif not differed:
        verdict = "conformant"
    elif not profile.waivable:
        verdict = "not conformant"
    elif passed == 0:
        verdict = "not supported"
    else:
        verdict = "partial"
    return ProfileClaim(name, profile.title, verdict, passed, len(counted), known, warnings, pending, errors)


def make_claim(results: list[CheckResult], suite_version: str, prefect_version: str, *, complete: bool = True) -> Claim:
    """The run's claim: one entry per profile with a check that ran, in the catalogue's order."""
    claim = Claim(prefect_version, api_version(), suite_version, complete=complete)
    for profile in load_catalogue().profiles:
        made = profile_claim(profile.name, [r for r in results if r.profile == profile.name])
        if made is not None:
            claim.profiles.append(made)
    return claim


def api_version() -> str:
    """The pinned release's ``SERVER_API_VERSION`` (the API version its clients send), read without importing it."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        return "unknown"
    constants = Path(list(spec.submodule_search_locations)[0]) / "client" / "constants.py"
    try:
        found = re.search(r'SERVER_API_VERSION\s*=\s*"([^"]+)"', constants.read_text())
    except OSError:
        return "unknown"
    return found.group(1) if found else "unknown"


def render_badge(claim: Claim) -> str:
    """A shields.io endpoint document (https://shields.io/badges/endpoint-badge) for a README badge."""
    core = next((p for p in claim.profiles if p.profile == "core"), None)
    if core is not None and core.verdict != "conformant":
        message, color = f"core {core.text}", "red"
    elif claim.conformant:
        every = len(claim.conformant) == len(claim.profiles)
        message, color = ", ".join(claim.conformant), "brightgreen" if every else "yellow"
    else:
        message, color = "not conformant", "red"
    return (
        json.dumps(
            {
                "schemaVersion": 1,
                "label": f"Prefect {claim.prefect_version} conformance",
                "message": message,
                "color": color,
            },
            indent=2,
        )
        + "\n"
    )
