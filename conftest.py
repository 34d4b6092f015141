"""pytest's entry to the suite in a checkout: ``pytest scenarios --target URL -m timestamps`` works here as it does
installed (``pytest --pyargs scenarios --target URL``), with the suite's fixtures and options but no reports,
expectations or bundled reference (``prefect-conformance run`` has those).

The suite's pytest plugin is :mod:`harness.plugin`. An installed suite registers it through its ``pytest11`` entry
point; a checkout that is not installed (or ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) gets it from here. The project's own
tests (``tests/``) have their conftest beside them.
"""

from harness.locations import plugin_autoloaded

pytest_plugins = [] if plugin_autoloaded() else ["harness.plugin"]
