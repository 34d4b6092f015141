"""The bundled reference's restart, served to whichever pytest process runs the durability checks.

The CLI owns the reference server (its process, its database, its port), but in a parallel run the durability
checks execute in one of xdist's worker processes. So the CLI serves the restart on a local socket, guarded by a
random key, and the checks ask for it (:func:`request_restart`); the environment variable :data:`RESTART_ENV`,
which every pytest process inherits, says where. The restart's own failure (the server did not come back) travels
back as the checks' error, with its message.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from multiprocessing.connection import Client, Listener
from typing import Callable

from harness.errors import HarnessError

#: Where the CLI's restart service listens, its key and what the restart does (JSON), for the pytest processes.
RESTART_ENV = "PREFECT_CONFORMANCE_BUNDLED_RESTART"


class RestartService:
    """Serves ``restart`` to the pytest processes while it is open (a context manager: the variable is set and the
    socket listens inside ``with``). One request at a time; each is answered ``("ok", "")`` or ``("error", why)``."""

    def __init__(self, restart: Callable[[], None], how: str) -> None:
        self.restart = restart
        self.how = how
        self._key = secrets.token_bytes(16)
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def __enter__(self) -> "RestartService":
        self._listener = Listener(("127.0.0.1", 0), authkey=self._key)
        host, port = self._listener.address
        os.environ[RESTART_ENV] = json.dumps({"host": host, "port": port, "key": self._key.hex(), "how": self.how})
        self._thread = threading.Thread(target=self._serve, name="bundled-restart", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.environ.pop(RESTART_ENV, None)
        self._closed = True
        if self._listener is not None:
            self._listener.close()  # accept() in the thread ends with an OSError

    def _serve(self) -> None:
        assert self._listener is not None
        while True:
            try:
                connection = self._listener.accept()
            except Exception:  # closed (the run is over), or a caller without the key: nothing to answer
                if self._closed:
                    return
                continue
            with connection:
                try:
                    connection.recv()
                    self.restart()
                    connection.send(("ok", ""))
                except Exception as exc:  # the restart's failure is the caller's error, said there
                    try:
                        connection.send(("error", str(exc) or type(exc).__name__))
                    except OSError:
                        pass


def served_restart(spec: str) -> tuple[str, Callable[[], None]]:
    """What the restart served at ``spec`` (the value of :data:`RESTART_ENV`) does, and a callable that asks the
    CLI's :class:`RestartService` for it and returns once the reference answers again; a restart that failed raises
    :class:`HarnessError` with why."""
    served = json.loads(spec)
    return served["how"], lambda: request_restart(served["host"], int(served["port"]), bytes.fromhex(served["key"]))


def request_restart(host: str, port: int, key: bytes) -> None:
    try:
        with Client((host, port), authkey=key) as connection:
            connection.send("restart")
            status, why = connection.recv()
    except (OSError, EOFError) as exc:
        raise HarnessError(
            f"the CLI's restart of the bundled reference ({host}:{port}) did not answer: {exc}"
        ) from None
    if status != "ok":
        raise HarnessError(f"the bundled reference did not restart: {why}")
