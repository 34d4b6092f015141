"""The catalogue of checks: each check's profile, severity, the suite version it came in and its Prefect reference.

The data is ``harness/catalogue.toml`` (one place to read and review it); what a check proves is its docstring, and
the releases it applies to are ``harness/releases.toml``'s ``n/a`` rules. Reports use it for the claim
(:mod:`harness.reporting.claims`) and the gate (a ``should`` failure warns; a check newer than an expectations file
is pending); ``prefect-conformance checks`` prints it, and docs/checks.md is generated from it.
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.features import FEATURES
from harness.locations import PACKAGE_DIR

CATALOGUE_FILE = PACKAGE_DIR / "catalogue.toml"
SEVERITIES = ("must", "should")


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    features: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    #: ``core`` is not: an expectations file keeps a gate green, but the claim still says it is not conformant.
    waivable: bool = True


@dataclass
class CheckInfo:
    """One check as the catalogue knows it (``prefect-conformance checks`` prints these)."""

    id: str
    feature: str
    profile: str
    severity: str
    #: Why: for ``must``, what breaks for a real client or what of a user's data is wrong; for ``should``, why
    #: Prefect's clients tolerate the difference.
    severity_reason: str
    since: str
    description: str = ""
    reference: str = ""
    applies_to: str = ""


def matches(check_id: str, pattern: str) -> bool:
    """``pattern`` is a check id in which ``*`` stands for any run of characters (as in expectations files)."""
    return check_id == pattern or re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), check_id) is not None


@dataclass(frozen=True)
class Catalogue:
    versions: tuple[str, ...]
    profiles: tuple[Profile, ...]
    since: tuple[tuple[str, tuple[str, ...]], ...]
    should: tuple[tuple[str, tuple[str, ...]], ...]
    must: tuple[tuple[str, str], ...]
    references: tuple[tuple[str, str], ...]
    check_references: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def version(self) -> str:
        """The suite version this catalogue describes: its newest."""
        return self.versions[-1]

    def profile_of(self, check_id: str, feature: str) -> str:
        for profile in self.profiles:
            if any(matches(check_id, pattern) for pattern in profile.checks):
                return profile.name
        for profile in self.profiles:
            if feature in profile.features:
                return profile.name
        return ""

    def profile(self, name: str) -> Profile:
        return next(p for p in self.profiles if p.name == name)

    def severity_of(self, check_id: str) -> tuple[str, str]:
        """(``must`` or ``should``, why: what breaks for a ``must`` check's feature, or why a ``should`` check's
        difference is tolerated)."""
        for reason, patterns in self.should:
            if any(matches(check_id, pattern) for pattern in patterns):
                return "should", reason
        return "must", dict(self.must).get(check_id.split("/", 1)[0], "")

    def since_of(self, check_id: str) -> str:
        for version, patterns in self.since:
            if any(matches(check_id, pattern) for pattern in patterns):
                return version
        return self.versions[0]

    def reference_of(self, check_id: str, feature: str) -> str:
        for reference, patterns in self.check_references:
            if any(matches(check_id, pattern) for pattern in patterns):
                return reference
        return dict(self.references).get(feature, "")

    def info(self, check_id: str, feature: str, description: str = "", applies_to: str = "") -> CheckInfo:
        severity, reason = self.severity_of(check_id)
        return CheckInfo(
            check_id,
            feature,
            self.profile_of(check_id, feature),
            severity,
            reason,
            self.since_of(check_id),
            description,
            self.reference_of(check_id, feature),
            applies_to,
        )

    def features_of(self, profiles: list[str]) -> list[str]:
        """The features whose checks the profiles hold (a profile of single checks names their features)."""
        wanted: list[str] = []
        for name in profiles:
            profile = self.profile(name)
            wanted += list(profile.features) + [pattern.split("/", 1)[0] for pattern in profile.checks]
        return list(dict.fromkeys(wanted))


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def newer(version: str, than: str) -> bool:
    return version_key(version) > version_key(than)


@functools.cache
def load_catalogue(path: Path = CATALOGUE_FILE) -> Catalogue:
    document = tomllib.loads(path.read_text())
    profiles = tuple(
        Profile(
            name,
            entry.get("title", ""),
            tuple(entry.get("features", ())),
            tuple(entry.get("checks", ())),
            bool(entry.get("waivable", True)),
        )
        for name, entry in document.get("profiles", {}).items()
    )
    unknown = {f for profile in profiles for f in profile.features} - set(FEATURES)
    if unknown:  # the feature table (harness/features.py) is the one list of features
        raise ValueError(f"{path}: profiles name features that harness/features.py does not list: {sorted(unknown)}")
    return Catalogue(
        versions=tuple(document["versions"]),
        profiles=profiles,
        since=tuple((entry["version"], tuple(entry["checks"])) for entry in document.get("since", [])),
        should=tuple(
            (" ".join(entry["reason"].split()), tuple(entry["checks"])) for entry in document.get("should", [])
        ),
        must=tuple(document.get("must", {}).items()),
        references=tuple(document.get("references", {}).items()),
        check_references=tuple((entry["reference"], tuple(entry["checks"])) for entry in document.get("reference", [])),
    )


def profile_names() -> list[str]:
    return [p.name for p in load_catalogue().profiles]


def parse_profiles(value: str) -> list[str]:
    """``--profiles core,workers``: the names, each a profile of the catalogue."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in profile_names()]
    if unknown or not names:
        raise ValueError(
            f"unknown profile {', '.join(unknown) or '(none given)'}; the profiles are {', '.join(profile_names())}"
        )
    return names


def render_catalogue_json(checks: list[CheckInfo]) -> str:
    catalogue = load_catalogue()
    document = {
        "suite_version": catalogue.version,
        "profiles": [{"name": p.name, "title": p.title, "waivable": p.waivable} for p in catalogue.profiles],
        "checks": [asdict(c) for c in checks],
    }
    return json.dumps(document, indent=2) + "\n"


def render_catalogue_markdown(checks: list[CheckInfo]) -> str:
    """docs/checks.md: every check, by profile, with what it proves, its severity, since and reference."""
    catalogue = load_catalogue()
    lines = [
        "# The checks",
        "",
        f"Generated by `prefect-conformance checks --format md` (suite {catalogue.version}); do not edit: the data is "
        "`harness/catalogue.toml`, each check's docstring and `harness/releases.toml`. "
        f"{len(checks)} checks in {len(catalogue.profiles)} profiles.",
        "",
        "- **Severity**: `must` (a real client breaks, or a user's data is wrong) or `should` (a difference "
        "Prefect's clients tolerate; a warning unless `--strict`).",
        "- **Since**: the suite version the check came in; against an expectations file written by an older "
        "version it is `pending` until it passes once or `--update-expectations` records it.",
        "- **Applies to**: where Prefect's own releases differ (`n/a` there), from `harness/releases.toml`.",
        "",
    ]
    lines += ["| profile | what it holds | checks |", "|---|---|---|"]
    for profile in catalogue.profiles:
        count = sum(1 for c in checks if c.profile == profile.name)
        lines.append(f"| `{profile.name}`{'' if profile.waivable else ' (never waived)'} | {profile.title} | {count} |")
    for profile in catalogue.profiles:
        held = [c for c in checks if c.profile == profile.name]
        if not held:
            continue
        lines += ["", f"## `{profile.name}`: {profile.title}"]
        order = list(profile.features)
        for feature in sorted(
            dict.fromkeys(c.feature for c in held), key=lambda f: order.index(f) if f in order else len(order)
        ):
            mine = [c for c in held if c.feature == feature]
            must = dict(catalogue.must).get(feature, "")
            lines += [
                "",
                f"### `{feature}` ({len(mine)})",
                "",
                f"- **must**, because {must}" if must else "",
                f"- **reference**: {dict(catalogue.references).get(feature, '')}",
                "",
                "| check | severity | since | what it proves |",
                "|---|---|---|---|",
            ]
            for check in mine:
                notes = []
                if check.reference != dict(catalogue.references).get(feature, ""):
                    notes.append(f"Reference: {check.reference}.")
                if check.applies_to != "every release the matrix runs":
                    notes.append(f"Applies to {check.applies_to}.")
                severity = f"should: {check.severity_reason}" if check.severity == "should" else "must"
                proves = " ".join([check.description or "(no description)", *notes]).replace("|", "\\|")
                lines.append(f"| `{check.id}` | {severity.replace('|', '/')} | {check.since} | {proves} |")
    return "\n".join(lines).rstrip() + "\n"


def applies_to(check_id: str) -> str:
    """Where Prefect's own releases differ for ``check_id``: the ``n/a`` rules of ``harness/releases.toml`` that
    name it, each with the first clause of its reason; "every release" when none does."""
    from harness.reference.releases import not_applicable_rules

    exceptions = []
    for rule in not_applicable_rules():
        if any(matches(check_id, pattern) for pattern in rule.checks):
            where = " and ".join(
                part
                for part in (
                    f"clients {rule.clients}" if rule.clients else "",
                    f"servers {rule.servers}" if rule.servers else "",
                    f"on {rule.storage}" if rule.storage else "",
                )
                if part
            )
            exceptions.append(f"n/a with {where or 'every release'}: {' '.join(rule.reason.split()).split(': ')[0]}")
    return "every release the matrix runs" + (", except: " + "; ".join(exceptions) if exceptions else "")
