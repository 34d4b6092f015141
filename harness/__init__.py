"""prefect-conformance: drive real Prefect clients against a Prefect-compatible server and report what differs.

The layers, bottom to top; a module may import the layers below its own, never one above (import-linter's contracts
in pyproject.toml hold this; docs/development.md draws it):

* :mod:`harness.errors`, :mod:`harness.locations`, :mod:`harness.features` - the exceptions and the one rule of
  fault, where things are, the feature table;
* :mod:`harness.waits` - bounded waits (the only way anything waits) and the target's loops they derive from;
* :mod:`harness.target` - the server under test: HTTP client, preflight, credentials, health, TLS;
* :mod:`harness.processes` - child processes that never outlive the harness;
* :mod:`harness.reference` - the bundled reference server (local process, containers, images) and Prefect releases;
* :mod:`harness.clients` - real Prefect clients, their relay and transcripts, and waits on what they do;
* :mod:`harness.reporting` - results, expectations, history, claims and the reports (never a server or a client);
* :mod:`harness.checks` - building blocks of the checks the scenarios make;
* :mod:`harness.plugin` - the pytest plugin that wires all this to the scenarios (``scenarios/``);
* :mod:`harness.commands` - the command line.
"""

#: The suite's version (pyproject.toml's, and the newest of harness/catalogue.toml's versions: a test holds them equal).
__version__ = "0.4.0"

#: The Prefect release whose server is the reference and whose clients are the actors.
PREFECT_REFERENCE_VERSION = "3.9.1"
