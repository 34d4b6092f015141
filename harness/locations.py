"""Where the suite finds its scenarios and keeps its reports and caches, in a checkout or installed.

In a checkout (``make conformance``), reports go to the checkout's ``reports/``. Installed from a wheel
(``pip install prefect-conformance``), they go to ``./prefect-conformance-reports/`` of the directory the user
runs in. Caches (the reference's migrated template database) go to the user cache directory
(``platformdirs``), never into site-packages; ``PREFECT_CONFORMANCE_CACHE_DIR`` overrides it. Imports nothing of
the harness.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_DIR_ENV = "PREFECT_CONFORMANCE_CACHE_DIR"


def checkout_root() -> Path | None:
    """The project checkout the harness runs from, or None when it runs from an installed wheel."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "Makefile").is_file() else None


#: Where reports go when ``--report-dir`` is not given (the suite's Docker image sets it to its mounted folder).
REPORT_DIR_ENV = "PREFECT_CONFORMANCE_REPORT_DIR"


def default_report_dir() -> Path:
    if configured := os.environ.get(REPORT_DIR_ENV):
        return Path(configured).expanduser().resolve()
    root = checkout_root()
    return root / "reports" if root else Path.cwd() / "prefect-conformance-reports"


def scenarios_dir() -> Path:
    """The folder of the conformance scenarios (the ``scenarios`` package, in the checkout or installed), found
    without importing it: the harness never imports a scenario."""
    spec = importlib.util.find_spec("scenarios")
    if spec is None or spec.origin is None:
        raise RuntimeError("the scenarios package is not installed beside the harness; reinstall prefect-conformance")
    return Path(spec.origin).resolve().parent


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("prefect-conformance"))


def plugin_autoloaded() -> bool:
    """Whether pytest loads the suite's plugin (``harness.plugin``) by itself: through the ``pytest11`` entry point of
    an installed suite, unless ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` says not to."""
    from importlib.metadata import entry_points

    registered = any(ep.value == "harness.plugin" for ep in entry_points(group="pytest11"))
    return registered and not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
