"""The suite as users adopt tools like it: a wheel installed into a fresh virtual environment, run from an empty
directory with no checkout in sight, both as ``prefect-conformance run`` and as plain ``pytest --target URL``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, REPORT_FILES, user_environment

#: Tests of this module share one expensive setup (one worker runs them in order).
pytestmark = pytest.mark.xdist_group("wheel")


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv (outside the checkout) with the wheel built from this checkout, and a user's environment."""
    base = tmp_path_factory.mktemp("wheel")
    env = user_environment()
    env["XDG_CACHE_HOME"] = str(base / "user-cache")  # where platformdirs puts the user cache dir on Linux
    # Built from a copy of the tracked files: a build writes build/ and *.egg-info/ next to its sources.
    source = base / "source"
    for name in subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split():
        if (PROJECT_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, source / name)
    venv = base / "venv"
    uv = Path(sys.executable).with_name("uv")  # what `make venv` installs; pip when the tests run elsewhere
    if uv.exists():  # as a uv user does it: `uv build`, `uv venv`, `uv pip install`
        build = [str(uv), "build", "--quiet", "--wheel", "--out-dir"]
        create = [str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)]
        # No --compile-bytecode: compiling all 6700 modules costs 10 CPU-s, and the two runs below import (and
        # so compile, once) well under half of them.
        install = [str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
    else:
        build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w"]
        create = [sys.executable, "-m", "venv", str(venv)]
        install = [str(venv / "bin" / "pip"), "install", "--quiet"]
    run([*build, str(base / "dist"), str(source)], cwd=base, env=env)
    wheels = list((base / "dist").glob("prefect_conformance-*.whl"))
    assert len(wheels) == 1, wheels
    run(create, cwd=base, env=env)
    run([*install, str(wheels[0])], cwd=base, env=env)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return venv, env


def test_wheel_holds_everything_a_run_needs(installed) -> None:
    venv, env = installed

    def says(code: str) -> str:
        """What ``code`` prints, run by the installed venv's Python."""
        return run([str(venv / "bin" / "python"), "-c", code], cwd=venv, env=env).stdout

    requires = says("from importlib.metadata import requires; print(requires('prefect-conformance'))")
    product = [r for r in eval(requires) if "extra ==" not in r]  # noqa: S307 (a list literal the line above printed)
    # uvicorn and aiohttp are the deviating proxy's, tests only
    assert not [r for r in product if r.startswith(("aiohttp", "uvicorn"))], product
    listing = says(
        "import harness, scenarios, harness.plugin; "
        "from harness.locations import checkout_root, scenarios_dir; "
        "print(checkout_root(), scenarios_dir()); print(harness.__file__)"
    )
    assert listing.startswith("None "), f"an installed copy must not think it is a checkout: {listing}"
    assert str(venv) in listing, listing
    entry_points = says(
        "from importlib.metadata import entry_points; print([e.value for e in entry_points(group='pytest11')])"
    )
    assert "harness.plugin" in entry_points
    flows = says(
        "from harness.clients.flow_scripts import FLOWS_DIR; print(sorted(p.name for p in FLOWS_DIR.glob('*.py')))"
    )
    assert "variables_flow.py" in flows, f"the wheel holds no flow scripts: {flows}"  # copied and run, never imported


def test_installed_cli_runs_from_an_empty_directory(installed, tmp_path: Path) -> None:
    """With its own bundled reference, as a new user's first run: reports land in the working directory, the
    reference's template database in the user cache dir, and nothing in site-packages."""
    venv, env = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    run(["prefect-conformance", "run", "-m", "timestamps", "-k", "output_format"], cwd=empty, env=env)
    latest = empty / "prefect-conformance-reports" / "latest"
    assert all((latest / name).is_file() for name in REPORT_FILES), sorted(p.name for p in latest.iterdir())
    cache = Path(env["XDG_CACHE_HOME"]) / "prefect-conformance"
    assert list(cache.glob("reference-db-prefect-*/prefect.db")), f"no template database in {cache}"
    site = next((venv / "lib").glob("python*/site-packages"))
    assert not (site / "reports").exists() and not (site / ".cache").exists(), (
        "nothing may be written into site-packages"
    )


def test_installed_scenarios_run_with_plain_pytest(installed, reference, tmp_path: Path) -> None:
    """`pytest --target URL` for people who prefer pytest: the plugin comes through its pytest11 entry point."""
    venv, env = installed
    proc = run(
        [
            "pytest",
            "--pyargs",
            "scenarios",
            "--target",
            reference.api_url,
            "-m",
            "timestamps",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "output_format",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert "4 passed" in proc.stdout, proc.stdout[-2000:]
