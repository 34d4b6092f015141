"""Where runs' reports live, and which earlier run is this run's baseline.

Every run writes ``REPORT_DIR/latest/``; the run before it moves to ``REPORT_DIR/YYYYMMDD-HHMMSS/``. Owns the
folder layout only; may import :mod:`harness.reporting.results`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path


def prepare_report_dir(root: Path, keep: int = 20) -> Path:
    """Move the previous ``latest`` run into a dated folder and return an empty ``latest``.

    At most ``keep`` dated folders are kept; the oldest go first.
    """
    root.mkdir(parents=True, exist_ok=True)
    latest = root / "latest"
    if latest.exists():
        stamp = _run_stamp(latest)
        destination = root / stamp
        suffix = 1
        while destination.exists():
            destination = root / f"{stamp}-{suffix}"
            suffix += 1
        latest.rename(destination)
    for old in dated_runs(root)[:-keep] if keep else dated_runs(root):
        shutil.rmtree(old, ignore_errors=True)
    latest.mkdir()
    return latest


def dated_runs(root: Path) -> list[Path]:
    """Earlier runs' folders, oldest first."""
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and re.match(r"^\d{8}-\d{6}", p.name))


def target_identity(target_url: str, target_kind: str) -> str:
    """What makes two runs comparable: the same URL, or the same kind of bundled reference (whose port varies)."""
    return target_url if target_kind == "url" else target_kind


def previous_results(root: Path, identity: str) -> Path | None:
    """The newest earlier run's results.json against the same target (see :func:`target_identity`), if any.

    A run against another server is no baseline: its failures are not this target's, and "fixed" would lie.
    """
    for folder in reversed(dated_runs(root)):
        try:
            run = json.loads((folder / "results.json").read_text())["run"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if target_identity(run.get("target_url", ""), run.get("target_kind", "")) == identity:
            return folder / "results.json"
    return None


def _run_stamp(folder: Path) -> str:
    try:
        started = json.loads((folder / "results.json").read_text())["run"]["started"]
        return dt.datetime.fromisoformat(started).strftime("%Y%m%d-%H%M%S")
    except (OSError, ValueError, KeyError, TypeError):
        return dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def earlier_outcomes(root: Path, identity: str) -> dict[str, list[str]]:
    """Check id -> its outcomes in the earlier runs in ``root`` against the same target (see
    :func:`target_identity`), newest first: whether a pending check ever passed here, and how often an intermittent
    one failed."""
    outcomes: dict[str, list[str]] = {}
    for folder in reversed(dated_runs(root)):
        try:
            document = json.loads((folder / "results.json").read_text())
            run = document["run"]
            checks = document["checks"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if target_identity(run.get("target_url", ""), run.get("target_kind", "")) != identity:
            continue
        for check in checks:
            if isinstance(check, dict) and "id" in check and "outcome" in check:
                outcomes.setdefault(check["id"], []).append(check["outcome"])
    return outcomes
