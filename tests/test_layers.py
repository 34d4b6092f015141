"""The house's rules, checked: the layers of the packages' docstrings (import-linter's contracts in pyproject.toml)
and the style (ruff). A new import that breaks a layer fails here with the rule's name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

BIN = Path(sys.executable).parent


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_layers_hold() -> None:
    proc = lint_imports(PROJECT_ROOT)
    assert proc.returncode == 0 and " 0 broken" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_an_import_up_a_layer_fails_with_the_rules_name(tmp_path: Path) -> None:
    """The generic waits reaching up for a real client: the contract names the rule and the line."""
    for part in ("harness", "scenarios", "pyproject.toml"):
        source = PROJECT_ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    with (tmp_path / "harness" / "waits.py").open("a") as waits:
        waits.write("\nfrom harness.clients.actors import Actor  # noqa: E402\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "the harness's layers, top to bottom BROKEN" in proc.stdout, proc.stdout[-3000:]
    assert "harness.waits is not allowed to import harness.clients" in proc.stdout, proc.stdout[-3000:]


def test_ruff_lints_and_formats_clean() -> None:
    for command in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run(
            [str(BIN / "ruff"), *command], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"ruff {' '.join(command)}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
