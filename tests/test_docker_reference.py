"""The reference in containers (testcontainers), on SQLite and on PostgreSQL, for real on this Docker engine.

Images come from ``harness.reference.images`` (built from Debian's and PyPI's packages when missing), because this
machine's engine cannot pull. The same scenarios must give identical verdicts on both storages (the
differential self-check), and no container or network of a run may be left afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SuiteRun, run_suite
from tests.test_readme import CHECKS_PER_FEATURE

#: Tests of this module share one expensive setup (one worker runs them in order).
pytestmark = pytest.mark.xdist_group("docker")


def engine_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


needs_docker = pytest.mark.skipif(not engine_available(), reason="no Docker engine answers on this machine")


@needs_docker
def test_sqlite_and_postgres_references_pass_and_agree(tmp_path: Path) -> None:
    """``--reference docker`` and ``--reference docker-postgres`` as a new user types them, with no image options.

    On this registry-less engine a run builds the local equivalents of the official images the first time on a
    machine (or reuses them) and says so in one line. Then both containerized storages pass, side by side (each run
    owns its containers, found by its own label), and give the same verdicts: the differential self-check.

    PostgreSQL runs the timestamps and scheduling checks: the storage no other test uses. The SQLite container runs
    the timestamps checks, which prove its plumbing (ports, settings, logs, clean-up); the scheduling checks on
    SQLite are the local reference's, run in full by the README test.
    """
    import docker

    from harness.reference.docker import DEFAULT_POSTGRES_IMAGE, DEFAULT_REFERENCE_IMAGE, leftovers
    from harness.reference.images import images_ready

    def on_this_machine(image: str) -> bool:
        try:
            docker.from_env().images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    built = images_ready()  # `make test` builds them beside the tests: then both runs go side by side
    if not built and os.geteuid() != 0:
        pytest.skip("the reference images are missing and building them needs root (make reference-images)")
    official = [image for image in (DEFAULT_REFERENCE_IMAGE, DEFAULT_POSTGRES_IMAGE) if on_this_machine(image)]
    markers = {mode: f"docker-{uuid.uuid4().hex[:8]}" for mode in ("docker-postgres", "docker")}
    features = {"docker-postgres": ("timestamps", "scheduling"), "docker": ("timestamps",)}

    def run_on(mode: str) -> SuiteRun:
        return run_suite(
            "--reference",
            mode,
            "-m",
            " or ".join(features[mode]),
            report_dir=tmp_path / mode,
            timeout=900,
            extra_env={"PREFECT_CONFORMANCE_RUN_ID": markers[mode]},
        )

    if built:
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = dict(zip(markers, pool.map(run_on, markers)))
    else:  # the first run builds the images; a second one at the same time would build them again
        runs = {mode: run_on(mode) for mode in markers}
    verdicts = {}
    for mode, run in runs.items():
        assert run.code == 0, f"{mode}: {run.explain()}"
        expected = sum(CHECKS_PER_FEATURE[feature] for feature in features[mode])
        assert len(run.passed()) == expected, f"{mode}: {run.explain()}"
        assert leftovers(markers[mode]) == [], f"{mode} left containers or networks behind"
        assert (run.report_dir / "reference" / "reference-server.log").exists()
        verdicts[mode] = {cid: c["status"] for cid, c in run.checks.items()}
        said = [line for line in run.stdout.splitlines() if "cannot pull" in line]
        if not official:
            assert len(said) == 1 and ("using the locally built" in said[0] or "about 2 minutes" in said[0]), (
                run.explain()
            )
    differ = {cid for cid in verdicts["docker"] if verdicts["docker"][cid] != verdicts["docker-postgres"][cid]}
    assert not differ, (
        f"SQLite and PostgreSQL references disagree on {sorted(differ)}: a bug in the check or in Prefect"
    )


def test_docker_reference_without_an_engine_fails_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    started = time.monotonic()
    run = run_suite("--reference", "docker", report_dir=tmp_path)
    assert run.code == 2, run.explain()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs a Docker engine" in lines[0] and "--reference local" in lines[0], run.stderr
    assert time.monotonic() - started < 30


# --- local-postgres: the subprocess reference on a PostgreSQL database the run owns ----------------------------

PGBIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def postgres_database():
    """A throwaway PostgreSQL cluster from Debian's package, run as the postgres user, on a free port."""
    import pwd
    import shutil
    import subprocess
    import tempfile

    from harness.reference.environment import free_port
    from harness.waits import wait_until

    if not (PGBIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip("needs Debian's postgresql-15 binaries and root (to run them as the postgres user)")
    user = pwd.getpwnam("postgres")
    base = Path(tempfile.mkdtemp(prefix="prefect-conformance-pg-"))  # pytest's tmp root is private to root
    data = base / "pgdata"
    data.mkdir()
    shutil.chown(base, user.pw_uid, user.pw_gid)
    shutil.chown(data, user.pw_uid, user.pw_gid)
    tmp_path = base
    port = free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, str(PGBIN / "initdb"), "-D", str(data), "--auth=trust", "-U", "prefect"],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [
            *as_postgres,
            str(PGBIN / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(tmp_path),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: (
                subprocess.run(
                    [str(PGBIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
                ).returncode
                == 0
            ),
            awaiting="the throwaway PostgreSQL to accept connections",
            timeout=30,
            interval=0.2,
        )
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def test_local_reference_on_postgres(postgres_database: str, tmp_path: Path) -> None:
    """The subprocess reference migrates and serves a PostgreSQL database the run was given. The checks on that
    storage are the containerized PostgreSQL's (above); here, one check per kind of object proves the mode."""
    run = run_suite(
        "--reference",
        "local-postgres",
        "--reference-db-url",
        postgres_database,
        "-k",
        "output_format",
        report_dir=tmp_path,
    )
    assert run.code == 0, run.explain()
    assert len(run.passed()) == 4, run.explain()


def test_local_postgres_without_a_database_is_a_usage_error(tmp_path: Path) -> None:
    run = run_suite("--reference", "local-postgres", report_dir=tmp_path)
    assert run.code == 2 and "needs --reference-db-url" in run.stderr, run.explain()
