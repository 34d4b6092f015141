"""The run-wide start budget as a pytest plugin: made before any pytest worker starts, which inherit it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from harness.clients.budget import BUDGET_ENV, AliveSampler, default_max_starts, prepare, read_load

#: The environment variable that can give ``--max-starts``.
MAX_STARTS_ENV = "PREFECT_CONFORMANCE_MAX_STARTS"


class StartBudget:
    """The run's start budget (:mod:`harness.clients.budget`), made before any pytest worker starts, which inherit it
    through the environment; the peak of flow-run processes alive is sampled here, and the run's load is written
    to ``budget/load.json`` at the end (for the reports)."""

    name = "prefect-conformance-start-budget"

    def __init__(self, config: pytest.Config) -> None:
        configured = config.getoption("--max-starts") or os.environ.get(MAX_STARTS_ENV)
        self.max_starts = max(1, int(configured)) if configured else default_max_starts()
        artifacts = config.getoption("--artifacts-dir")
        root = Path(artifacts).resolve() if artifacts else Path(tempfile.mkdtemp(prefix="prefect-conformance-"))
        self.folder = prepare(root / "budget", self.max_starts)
        os.environ[BUDGET_ENV] = str(self.folder)
        self.sampler = AliveSampler(self.folder).start()

    def pytest_unconfigure(self) -> None:
        load = read_load(self.folder, self.max_starts, self.sampler.stop())
        (self.folder / "load.json").write_text(json.dumps(load.as_dict()))
        os.environ.pop(BUDGET_ENV, None)
