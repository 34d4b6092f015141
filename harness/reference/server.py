"""The contract every kind of bundled reference server keeps (local process, containers).

Imports nothing of the harness.
"""

from __future__ import annotations

from pathlib import Path


class ReferenceServer:
    """What every kind of bundled reference offers: ``start``/``stop`` (or ``with``), ``api_url``, and a log
    file kept in the run's report folder (``workdir``)."""

    workdir: Path
    startup_seconds: float

    @property
    def api_url(self) -> str:  # pragma: no cover - each kind says where it listens
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / "reference-server.log"

    def start(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def launch(self) -> None:
        """Start the server's process without waiting for it to answer; :meth:`wait_ready` waits. Together they
        are :meth:`start`, apart they let the suite's own start-up run while the server comes up. A kind that
        cannot say where it listens before it is up does everything here."""
        self.start()

    def wait_ready(self) -> None:
        """Wait until a :meth:`launch`-ed server answers (raises ``HarnessError`` if it dies or never does)."""

    def stop(self) -> None:  # pragma: no cover
        raise NotImplementedError

    #: What :meth:`restart` does, in words for the report.
    restart_how: str = ""

    def restart(self) -> None:  # pragma: no cover
        """Stop the server and start it again on the same data, at the same URL: the durability checks' restart."""
        raise NotImplementedError

    @property
    def restart_description(self) -> str:
        """How the durability checks' report names this restart."""
        return f"the bundled reference's own restart ({self.restart_how})"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
