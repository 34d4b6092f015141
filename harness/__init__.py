"""prefect-conformance: drive real Prefect clients against a Prefect-compatible server and report what differs.

The layers, each a subpackage whose docstring says what it owns and what it may import, bottom to top:

* :mod:`harness.target` - the server under test: HTTP client, preflight, credentials, errors and the fault rule;
* :mod:`harness.waits` - bounded waits (the only way anything waits) and the wait strategies;
* :mod:`harness.reference` - the bundled reference server (local process, containers, images);
* :mod:`harness.clients` - real Prefect clients, their recorders and transcripts, child processes;
* :mod:`harness.checks` - building blocks of the checks the scenarios make;
* :mod:`harness.reporting` - results, expectations, history and the reports;
* :mod:`harness.plugin` - the pytest plugin that wires all this to the scenarios (``scenarios/``);
* :mod:`harness.commands` - the command line.
"""

#: The suite's version (pyproject.toml's, and the newest of harness/catalogue.toml's versions: a test holds them equal).
__version__ = "0.3.0"

#: The Prefect release whose server is the reference and whose clients are the actors.
PREFECT_REFERENCE_VERSION = "3.9.1"
