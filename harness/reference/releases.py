"""Prefect releases: the pinned one the harness runs on, and any other in its own cached virtual environment.

Real clients (and, later, reference servers) of another release run as child processes of that environment's
interpreter; the harness itself stays on the pinned release. An environment is created from PyPI on first use
and installed the way the release was released: uv resolves its dependencies as they stood on PyPI when the
release was uploaded (``--exclude-newer``). Without that cut-off, dependencies the release never met break it,
and a matrix reports Prefect's own dependency drift as the target's failure (issue 12 measured 3.4.25's
scheduler crashing on SQLAlchemy 2.1). Pins a release still needs on top are kept in ``releases.toml``.

Imports nothing of the harness but :mod:`harness.locations`, :mod:`harness.errors` and
:mod:`harness.reference.environment`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import fnmatch
import functools
import re
import shutil
import subprocess
import sys
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Callable, Iterator

from harness.errors import HarnessError
from harness.locations import PACKAGE_DIR, cache_dir
from harness.reference.environment import prefect_executable

#: The index the release dates come from (PEP 691 JSON with PEP 700 upload times; uv reads the same).
INDEX_URL = "https://pypi.org/simple"
PINS_FILE = PACKAGE_DIR / "releases.toml"
VERSION = re.compile(r"^\d+\.\d+\.\d+$")
COMPLETE = ".prefect-conformance-complete"
#: The environment variable that names the clients' release, as ``--client-version`` does.
CLIENT_VERSION_ENV = "PREFECT_CONFORMANCE_CLIENT_VERSION"
#: And the one that names the bundled reference's release, as ``--reference-version`` does.
REFERENCE_VERSION_ENV = "PREFECT_CONFORMANCE_REFERENCE_VERSION"


@dataclass(frozen=True)
class Release:
    """One Prefect release and the interpreter that has it installed."""

    version: str
    python: str

    @property
    def is_pinned(self) -> bool:
        return self.python == sys.executable

    @property
    def prefect(self) -> str:
        """Its ``prefect`` command."""
        return prefect_executable() if self.is_pinned else str(Path(self.python).with_name("prefect"))


def pinned() -> Release:
    """The release the harness itself runs on (``pyproject.toml``'s pin)."""
    return Release(installed_version("prefect"), sys.executable)


def release(version: str | None, *, cache: Path | None = None, announce: Callable[..., None] = print) -> Release:
    """The release ``version`` (the pinned one when None or equal), its environment created if missing."""
    if not version or version == installed_version("prefect"):
        return pinned()
    check_release_number(version)
    root = (cache or cache_dir()) / "releases" / f"prefect-{version}"
    python = root / "bin" / "python"
    requirements = [f"prefect=={version}", *pins(version)]
    if not _complete(root, requirements):
        root.parent.mkdir(parents=True, exist_ok=True)
        with _locked(root.parent / f"prefect-{version}.lock"):
            if not _complete(root, requirements):  # another run may have created it while this one waited
                announce(_create(version, root, requirements), flush=True)
    return Release(version, str(python))


def _complete(root: Path, requirements: list[str]) -> bool:
    """The environment was created to the end, with today's requirements (``releases.toml`` may have changed)."""
    try:
        return (root / COMPLETE).read_text().splitlines()[0] == " ".join(requirements)
    except (OSError, IndexError):
        return False


def check_release_number(version: str) -> str:
    """``version`` if it is written as a Prefect release (X.Y.Z); a one-line error before anything is installed."""
    if not VERSION.match(version):
        raise HarnessError(f"{version!r} is not a Prefect release number. Hint: write it as X.Y.Z, e.g. 3.4.25")
    return version


def pins(version: str, path: Path = PINS_FILE) -> list[str]:
    """Requirements ``releases.toml`` adds for ``version`` (by exact version, then by ``X.Y``)."""
    return list(_lookup("pins", version, path) or [])


def scheduler_loop_seconds(version: str, configured: float, path: Path = PINS_FILE) -> float:
    """How often a server of ``version`` started with ``configured`` as its scheduler loop setting really loops."""
    return float(_lookup("scheduler_loop_seconds", version, path) or configured)


@dataclass(frozen=True)
class NotApplicable:
    """Checks that do not hold for a pair of server and client releases, because Prefect itself differs there."""

    checks: tuple[str, ...]
    reason: str
    #: PEP 440 specifiers (``"<3.1"``); empty means every release.
    clients: str = ""
    servers: str = ""
    #: ``"sqlite"`` or ``"postgresql"`` when only that storage shows the difference; empty means any. A target
    #: whose storage is unknown (a URL) is taken to be on it: the rule is about Prefect's own releases.
    storage: str = ""

    def holds(self, check: str, client_version: str, server_version: str, storage: str | None = None) -> bool:
        # An exact id first: a parametrized one's "[runner]" would be a character class to fnmatch.
        return (
            any(check == pattern or fnmatch.fnmatchcase(check, pattern) for pattern in self.checks)
            and _within(client_version, self.clients)
            and _within(server_version, self.servers)
            and (not self.storage or storage is None or storage == self.storage)
        )


def not_applicable_rules(path: Path = PINS_FILE) -> list[NotApplicable]:
    return [
        NotApplicable(
            tuple(entry["checks"]),
            entry["reason"],
            entry.get("clients", ""),
            entry.get("servers", ""),
            entry.get("storage", ""),
        )
        for entry in _document(path).get("not_applicable", [])
    ]


def not_applicable(
    check: str, client_version: str, server_version: str, path: Path = PINS_FILE, storage: str | None = None
) -> str | None:
    """Why ``check`` does not apply to this server and client release (on ``storage``, None if unknown), or None
    when it does."""
    for rule in not_applicable_rules(path):
        if rule.holds(check, client_version, server_version, storage):
            return rule.reason
    return None


def storage_of(target_kind: str) -> str | None:
    """The storage of a bundled reference, from its kind (``reference-docker-postgres``); None for a URL."""
    if not target_kind.startswith("reference-"):
        return None
    return "postgresql" if target_kind.endswith("postgres") else "sqlite"


def _within(version: str, specifiers: str) -> bool:
    """True when ``version`` satisfies ``specifiers``; a version that is no release number (a port's own) never
    does, so a port is held to every check unless it claims a Prefect release."""
    if not specifiers:
        return True
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(specifiers)
    except InvalidVersion:
        return False


def _document(path: Path) -> dict:
    """``releases.toml``, parsed once per version of the file: collection asks it once per check."""
    return _parsed(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int) -> dict:
    return tomllib.loads(Path(path).read_text())


def _lookup(table: str, version: str, path: Path):
    entries = _document(path).get(table, {})
    return entries.get(version, entries.get(version.rsplit(".", 1)[0]))


def uploaded_at(version: str, index_url: str = INDEX_URL) -> dt.datetime:
    """When ``prefect==version`` was uploaded to the index (the newest of its files)."""
    import httpx

    url = f"{index_url.rstrip('/')}/prefect/"
    try:
        answer = httpx.get(
            url, headers={"Accept": "application/vnd.pypi.simple.v1+json"}, timeout=30, follow_redirects=True
        )
        files = answer.raise_for_status().json()["files"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise HarnessError(
            f"cannot read Prefect's release dates from {url}: {exc}. Hint: installing another "
            "Prefect release needs PyPI (or an index with PEP 700 upload times)"
        ) from exc
    stamps = [
        f["upload-time"] for f in files if _is_release_file(f.get("filename", ""), version) and f.get("upload-time")
    ]
    if not stamps:
        raise HarnessError(f"{url} lists no files of prefect {version}. Hint: pick a version PyPI has, e.g. 3.4.25")
    return max(dt.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps)


def exclude_newer(version: str) -> str:
    """uv's ``--exclude-newer`` for ``version``: an hour after its upload, so the release itself is in."""
    return (uploaded_at(version) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_release_file(filename: str, version: str) -> bool:
    return filename.startswith((f"prefect-{version}-", f"prefect-{version}.tar"))


def _create(version: str, root: Path, requirements: list[str]) -> str:
    started = time.monotonic()
    cutoff = exclude_newer(version)
    shutil.rmtree(root, ignore_errors=True)  # an earlier attempt that did not complete
    uv = _uv()
    for argv in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(root)],
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(root / "bin" / "python"),
            "--compile-bytecode",
            "--exclude-newer",
            cutoff,
            *requirements,
        ],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise HarnessError(
                f"installing Prefect {version} into {root} failed: {' | '.join(detail)}. Hint: check "
                f"the version exists on PyPI, and add the pins it needs to {PINS_FILE.name}"
            )
    (root / COMPLETE).write_text(" ".join(requirements) + f"\nexclude-newer {cutoff}\n")
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return (
        f"prefect-conformance: installed Prefect {version} in {root} ({size / 1e6:.0f} MB, "
        f"{time.monotonic() - started:.1f} s; dependencies as on PyPI at {cutoff[:16].replace('T', ' ')} UTC)"
    )


def _uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise HarnessError("installing another Prefect release needs uv. Hint: pip install uv") from None
        return found


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process creates an environment; parallel runs (pytest workers, a matrix's columns) wait for it."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
