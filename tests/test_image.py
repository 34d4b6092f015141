"""``make image``: the suite's own Docker image, built on this registry-less engine from Debian's and PyPI's
packages, runs the suite against a server from a container and leaves the reports in a mounted folder."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPORT_FILES
from tests.test_docker_reference import needs_docker

#: After the Docker test of the reference, whose images this one is built on (one worker runs the group in order).
pytestmark = pytest.mark.xdist_group("docker")


@needs_docker
def test_the_suites_image_runs_against_a_target_with_reports_in_a_mounted_folder(reference, tmp_path: Path) -> None:
    from harness.commands.image import ensure_image

    image = ensure_image()
    reports = tmp_path / "reports"
    reports.mkdir()
    started = time.monotonic()
    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "host",
            "-v",
            f"{reports}:/reports",
            image,
            "run",
            "--target",
            reference.api_url,
            "-m",
            "handshake or labels",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "prefect-conformance: 4 passed, 0 failed" in done.stdout, done.stdout[-2000:]
    missing = [name for name in REPORT_FILES if not (reports / "latest" / name).is_file()]
    assert not missing, f"no {missing} in the mounted folder"
    print(f"the image's run took {time.monotonic() - started:.1f} s")
    help_ = subprocess.run(["docker", "run", "--rm", image], capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and "prefect-conformance" in help_.stdout
