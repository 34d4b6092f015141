"""Flows run as scripts: the flow engine in one process, as in every Runner's and worker's flow-run process, for
checks of what flow code asks of the server. The flows are real Python files in :file:`flows/`, copied into the run's
folder and started with their arguments; the harness imports nothing of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from harness.clients.actors import Actor, start_client
from harness.reference.releases import Release, pinned

FLOWS_DIR = Path(__file__).resolve().parent / "flows"


def start_flow_script(
    target_api_url: str,
    workdir: Path,
    *,
    script: str,
    args: list[str],
    name: str = "flow-run",
    release: Release | None = None,
) -> Actor:
    """Copy ``flows/<script>`` into ``workdir`` and run it with ``args`` by the client release's Python."""
    path = workdir / name / script
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FLOWS_DIR / script, path)
    return start_client(
        target_api_url, workdir, name, [(release or pinned()).python, str(path), *args], cwd=path.parent
    )


def read_output(out: Path) -> dict[str, Any] | None:
    """What a flow script wrote to its output file, or None while it has not finished."""
    try:
        return json.loads(out.read_text())
    except FileNotFoundError:
        return None
