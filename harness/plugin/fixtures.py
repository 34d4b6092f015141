"""The fixtures the scenarios use: the target and its API, the run's names and objects, real clients, the target's
clock, its restart and its API contract."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness.checks.naming import new_run_prefix, unique_name
from harness.checks.objects import Created, create_flow
from harness.checks.server_times import TargetClock, during, measure_clock
from harness.clients.actors import Actor
from harness.errors import HarnessError
from harness.plugin.quiet_point import QuietPoint
from harness.reference.openapi import openapi_document
from harness.reference.releases import Release, pinned, release
from harness.reference.server import ReferenceServer
from harness.target.api import ApiClient
from harness.target.credentials import api_headers
from harness.target.preflight import Target, preflight

#: The environment variable that can give ``--restart-command``.
RESTART_COMMAND_ENV = "PREFECT_CONFORMANCE_RESTART_COMMAND"


#: Where a session that started its own reference (no ``--target``) leaves its restart for the durability checks; the
#: CLI's bundled reference is restarted through :mod:`harness.reference.restart` instead.
RESTARTER = pytest.StashKey[ReferenceServer]()


#: How long a restart command may take, and the target to answer ``/health`` again after it (scaled).
RESTART_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def run_prefix(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--run-prefix") or new_run_prefix()


@pytest.fixture(scope="session")
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    configured = request.config.getoption("--artifacts-dir")
    # Resolved here, where the option enters: actors run in their own working directories.
    path = Path(configured).resolve() if configured else Path(tempfile.mkdtemp(prefix="prefect-conformance-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[Target]:
    """The server under test, after preflight; a local reference when no ``--target`` was given."""
    url = request.config.getoption("--target")
    if url:  # a reference starting beside pytest is ready by now: pytest_runtestloop waited for it
        yield preflight(url, kind=request.config.getoption("--target-kind"))
        return
    from harness.reference.local import LocalReference

    with LocalReference(workdir=artifacts_dir / "reference") as reference:
        request.config.stash[RESTARTER] = reference
        yield preflight(reference.api_url, kind="local")


@pytest.fixture(scope="session")
def api(target: Target) -> Iterator[ApiClient]:
    with ApiClient(target.api_url, headers=api_headers()) as client:
        yield client


@pytest.fixture(scope="session")
def reference_api(request: pytest.FixtureRequest, target: Target) -> Iterator[ApiClient]:
    """A client of Prefect's own server, for the differential checks (``--reference-url``). The target's
    credentials go only to the target: the reference gets them only when it is the target itself."""
    url = request.config.getoption("--reference-url").rstrip("/")
    with ApiClient(url, headers=api_headers() if url == target.api_url.rstrip("/") else {}) as client:
        yield client


@pytest.fixture(scope="session")
def target_clock(api: ApiClient, run_prefix: str) -> TargetClock:
    """How far the target's clock is from the harness's, measured once per process from flows it creates (and
    deletes at once): every check of a time the server sets reads it against the target's own clock."""
    ledger = Created(api)

    def create(index: int):
        body = {"name": unique_name(run_prefix, "clock", str(index))}
        answer, window = during("POST /flows/", lambda: api.request("POST", "/flows/", json_body=body))
        if answer.status in (200, 201):
            ledger.add(f"/flows/{answer.json()['id']}")
        return answer, window

    try:
        return measure_clock(create)
    finally:
        ledger.delete_all()


@dataclass(frozen=True)
class Restart:
    """How the target is restarted on its own data, for the durability checks."""

    how: str
    act: Callable[[], None]


@pytest.fixture(scope="session")
def target_restart(request: pytest.FixtureRequest, target: Target) -> Restart | None:
    """The bundled reference's own restart (the CLI serves it; a session's own reference stashes it), or
    ``--restart-command``; None without either."""
    from harness.reference.restart import RESTART_ENV, served_restart

    served = os.environ.get(RESTART_ENV)
    if served:
        return Restart(*served_restart(served))
    reference = request.config.stash.get(RESTARTER, None)
    if reference is not None:
        return Restart(reference.restart_description, reference.restart)
    command = request.config.getoption("--restart-command")
    if not command:
        return None

    def run_command() -> None:
        import subprocess

        from harness.target.health import wait_for_health
        from harness.waits import timeout_scale

        limit = RESTART_TIMEOUT * timeout_scale()
        try:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"--restart-command {command!r} did not finish within {limit:.0f} s") from None
        if done.returncode != 0:
            raise HarnessError(
                f"--restart-command {command!r} exited with code {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-300:]}"
            )
        wait_for_health(
            target.api_url,
            timeout=RESTART_TIMEOUT,
            what="the target after --restart-command",
            hint="the restart command must leave the server running and answering /health",
        )

    return Restart(f"--restart-command {command!r}", run_command)


@pytest.fixture
def names(run_prefix: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """``names("flow")`` -> a unique, run-prefixed name that says which scenario created it."""
    scenario = request.node.originalname.removeprefix("test_")
    return lambda *parts: unique_name(run_prefix, scenario, *parts)


@pytest.fixture
def created(api: ApiClient) -> Iterator[Created]:
    """Ledger of objects a scenario creates; they are deleted when it ends, whatever its outcome."""
    ledger = Created(api)
    yield ledger
    ledger.delete_all()


@pytest.fixture
def flow(api: ApiClient, created: Created, names: Callable[..., str]) -> dict[str, Any]:
    """A flow of the check's own, deleted when it ends."""
    return create_flow(api, created, names("flow"))


@pytest.fixture(scope="module")
def feature(request: pytest.FixtureRequest) -> str:
    return request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")


@pytest.fixture(scope="module")
def module_names(run_prefix: str, feature: str) -> Callable[..., str]:
    return lambda *parts: unique_name(run_prefix, feature, *parts)


@pytest.fixture(scope="module")
def module_created(api: ApiClient) -> Iterator[Created]:
    ledger = Created(api)
    yield ledger
    ledger.delete_all()


@pytest.fixture(scope="module")
def scenario_dir(artifacts_dir: Path, feature: str) -> Path:
    """Where a module's actors keep their logs and transcripts (``artifacts/<feature>/``)."""
    path = artifacts_dir / feature
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def client_release(request: pytest.FixtureRequest) -> Release:
    """The Prefect release every real client of this run comes from (``--client-version``)."""
    return release(request.config.getoption("--client-version"))


@pytest.fixture(scope="module")
def actors(target: Target, scenario_dir: Path, client_release: Release) -> Iterator[Callable[..., Actor]]:
    """``actors(start_runner, flow_name=..., ...)`` starts a real client of the run's release through a recorder;
    all stop at teardown."""
    started: list[Actor] = []

    def start(factory: Callable[..., Actor], **kwargs: object) -> Actor:
        actor = factory(target.api_url, scenario_dir, release=client_release, **kwargs)
        started.append(actor)
        return actor

    yield start
    for actor in started:
        actor.stop()


@dataclass(frozen=True)
class ApiContract:
    """The OpenAPI document answers are judged by, and the Prefect release it is of."""

    version: str
    document: dict
    python: str  # an interpreter with that release installed (to ask its own app, see harness.checks.bad_input)


@pytest.fixture(scope="session")
def api_contract(request: pytest.FixtureRequest, target: Target) -> ApiContract:
    """A bundled reference of another release is judged by that release's document (its answers are that
    release's contract); any other target by the pinned release's, the clients this suite drives."""
    kind = request.config.getoption("--target-kind") or "url"
    chosen = pinned()
    if kind.startswith("reference-") and target.version != chosen.version:
        chosen = release(target.version)
    return ApiContract(chosen.version, openapi_document(chosen.version, chosen.python), chosen.python)


@pytest.fixture(scope="module")
def quiet_point(request: pytest.FixtureRequest, feature: str) -> Callable[[], str]:
    """``quiet_point()`` returns once every check of the run outside this module has finished (:class:`QuietPoint`):
    what a check that disturbs the target (restarts it) waits for."""
    plugin: QuietPoint = request.config.pluginmanager.get_plugin(QuietPoint.name)
    return lambda: plugin.wait(request.session, but=feature)
