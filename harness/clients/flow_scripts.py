"""Flows run as scripts: the flow engine in one process, as in every Runner's and worker's flow-run process, for
checks of what flow code asks of the server. The flows are real Python files in :file:`flows/`, copied into the run's
folder and started with their arguments; the harness imports nothing of them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness.clients.actors import Actor, read_submission, start_client
from harness.clients.progress import died
from harness.reference.releases import Release, pinned
from harness.waits import wait_until

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


def await_output(client: Actor, out: Path, *, awaiting: str, timeout: float, hint: str) -> dict[str, Any]:
    """What a client that writes ``out`` and exits wrote there, once it has exited; if it exited otherwise, what its
    death means (:func:`~harness.clients.progress.died`)."""

    def finished() -> bool:
        if client.is_running():
            return False
        if client.process.popen.returncode != 0 or read_submission(out) is None:
            raise died(client)
        return True

    wait_until(finished, awaiting=awaiting, timeout=timeout, interval=0.2, hint=hint)
    return read_submission(out)
