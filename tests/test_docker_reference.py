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
def test_docker_reference_on_an_engine_that_cannot_pull(tmp_path: Path) -> None:
    """`--reference docker` with no image options, as a new user types it, on this registry-less engine: the
    run builds (first time on a machine) or reuses the local equivalents, and says so in one line."""
    import docker

    from harness.reference.docker import DEFAULT_REFERENCE_IMAGE

    try:
        docker.from_env().images.get(DEFAULT_REFERENCE_IMAGE)
        pytest.skip(f"{DEFAULT_REFERENCE_IMAGE} is on this machine: nothing to replace")
    except docker.errors.ImageNotFound:
        pass
    if os.geteuid() != 0:
        pytest.skip("building the local images needs root")
    run = run_suite("--reference", "docker", "-k", "output_format", report_dir=tmp_path, timeout=900)
    assert run.code == 0, run.explain()
    said = [line for line in run.stdout.splitlines() if f"cannot pull {DEFAULT_REFERENCE_IMAGE}" in line]
    assert len(said) == 1 and ("using the locally built" in said[0] or "about 2 minutes" in said[0]), run.explain()


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    from harness.reference.images import POSTGRES_IMAGE, PREFECT_IMAGE, ensure_images, image_exists

    if not (image_exists(PREFECT_IMAGE) and image_exists(POSTGRES_IMAGE)):
        if os.geteuid() != 0:
            pytest.skip("the reference images are missing and building them needs root (make reference-images)")
        ensure_images()
    return PREFECT_IMAGE, POSTGRES_IMAGE


@needs_docker
def test_sqlite_and_postgres_references_pass_and_agree(images, tmp_path: Path) -> None:
    """Both containerized storages, side by side (each run owns its containers, found by its own label)."""
    from harness.reference.docker import leftovers

    prefect_image, postgres_image = images
    markers = {mode: f"docker-{uuid.uuid4().hex[:8]}" for mode in ("docker", "docker-postgres")}

    def run_on(mode: str) -> SuiteRun:
        return run_suite("--reference", mode, "--reference-image", prefect_image, "--postgres-image", postgres_image,
                         "-m", "timestamps or scheduling", report_dir=tmp_path / mode,
                         extra_env={"PREFECT_CONFORMANCE_RUN_ID": markers[mode]})

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(markers, pool.map(run_on, markers)))
    verdicts = {}
    for mode, run in runs.items():
        assert run.code == 0, f"{mode}: {run.explain()}"
        assert len(run.passed()) == 77, f"{mode}: {run.explain()}"
        assert leftovers(markers[mode]) == [], f"{mode} left containers or networks behind"
        assert (run.report_dir / "reference" / "reference-server.log").exists()
        verdicts[mode] = {cid: c["status"] for cid, c in run.checks.items()}
    differ = {cid for cid in verdicts["docker"] if verdicts["docker"][cid] != verdicts["docker-postgres"].get(cid)}
    assert not differ, f"SQLite and PostgreSQL references disagree on {sorted(differ)}: a bug in the check or in Prefect"


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
    subprocess.run([*as_postgres, str(PGBIN / "initdb"), "-D", str(data), "--auth=trust", "-U", "prefect"], check=True, capture_output=True)
    server = subprocess.Popen([*as_postgres, str(PGBIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(tmp_path),
                               "-c", "listen_addresses=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run([str(PGBIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0,
                   awaiting="the throwaway PostgreSQL to accept connections", timeout=30, interval=0.2)
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def test_local_reference_on_postgres(postgres_database: str, tmp_path: Path) -> None:
    run = run_suite("--reference", "local-postgres", "--reference-db-url", postgres_database, "-m", "timestamps", report_dir=tmp_path)
    assert run.code == 0, run.explain()
    assert len(run.passed()) == 32


def test_local_postgres_without_a_database_is_a_usage_error(tmp_path: Path) -> None:
    run = run_suite("--reference", "local-postgres", report_dir=tmp_path)
    assert run.code == 2 and "needs --reference-db-url" in run.stderr, run.explain()
