"""The reference server in containers (testcontainers), on SQLite or on PostgreSQL.

``--reference docker`` runs the pinned Prefect's ``prefect server start`` in a container from the official image
(``prefecthq/prefect:3.9.1-python3.11``, overridable); ``--reference docker-postgres`` adds a PostgreSQL container
on a private Docker network and points Prefect at it. PostgreSQL stores timestamps as ``TIMESTAMP WITH TIME
ZONE`` and SQLite as naive text converted by Prefect, so the two storages are exactly what the timestamp checks
must survive.

Where no registry is reachable, the default images are replaced by equivalents built from Debian's and PyPI's
packages (:mod:`harness.reference.images`, also ``make reference-images``), built on first use. Ryuk is disabled (its
image cannot be pulled everywhere): every container
and network carries the run's label and is removed by :meth:`DockerReference.stop`, on failure and on Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import PREFECT_REFERENCE_VERSION
from harness.errors import HarnessError, WaitTimeout
from harness.reference.environment import FAST_SERVICE_SETTINGS, free_port
from harness.reference.server import ReferenceServer
from harness.target.health import wait_for_health
from harness.waits import wait_until

# Ryuk (testcontainers' reaper) is itself an image to pull; this harness removes its containers itself.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def official_image(version: str = PREFECT_REFERENCE_VERSION) -> str:
    """Prefect's own image of ``version``."""
    return f"prefecthq/prefect:{version}-python3.11"


DEFAULT_REFERENCE_IMAGE = official_image()
DEFAULT_POSTGRES_IMAGE = "postgres:15"
RUN_LABEL = "prefect-conformance.run"
READY_TIMEOUT = 180


def docker_client():
    """A Docker client, or a one-line HarnessError that suggests the local reference."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception as exc:  # docker.errors.DockerException and socket errors alike
        raise HarnessError(
            f"The docker reference needs a Docker engine, and none answered ({type(exc).__name__}). "
            "Hint: run with --reference local (the default), which needs no Docker."
        ) from None


def pullable(client, image: str) -> bool:
    """True when ``image`` is on this machine or the engine could pull it."""
    import docker

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
        return True
    except Exception:  # no registry, no network, no such tag: all mean "not here"
        return False


def usable_images(
    client, image: str, postgres_image: str | None, log_path: Path, version: str = PREFECT_REFERENCE_VERSION
) -> tuple[str, str | None]:
    """The images to run: the requested ones when present or pullable. Where the engine can pull neither of
    the *default* images of ``version`` (a machine without a registry), their equivalents built from Debian's and
    PyPI's packages (:mod:`harness.reference.images`), built once per machine and release, saying so in one line
    first."""
    from harness.reference import images

    local = {
        official_image(version): images.prefect_image(version),
        DEFAULT_POSTGRES_IMAGE: images.postgres_image(version),
    }
    missing = [i for i in (image, postgres_image) if i and not pullable(client, i)]
    if not missing:
        return image, postgres_image
    custom = [i for i in missing if i not in local]
    if custom:
        raise HarnessError(
            f"Docker image {custom[0]} is not on this machine and could not be pulled. Hint: build or load it first, "
            "or leave REFERENCE_IMAGE/POSTGRES_IMAGE unset to use images built from Debian's and PyPI's packages."
        )
    if all(images.image_exists(local[i]) for i in missing):
        print(
            f"prefect-conformance: cannot pull {', '.join(missing)}; using the locally built "
            f"{', '.join(local[i] for i in missing)}",
            flush=True,
        )
    elif os.geteuid() != 0:
        raise HarnessError(
            f"Docker image {missing[0]} cannot be pulled here, and building its local equivalent needs root. "
            "Hint: run `sudo make reference-images` once, or use --reference local."
        )
    else:
        print(
            f"prefect-conformance: cannot pull {', '.join(missing)} (no registry); building equivalents from "
            f"Debian's and PyPI's packages, once for this machine (about 2 minutes; log: {log_path})",
            flush=True,
        )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            try:
                images.ensure_images(output=log, version=version)
            except Exception as exc:
                raise HarnessError(
                    f"Building the reference images failed ({type(exc).__name__}: {exc}). Log: {log_path}"
                ) from None
    return local.get(image, image) if image in missing else image, (
        local.get(postgres_image, postgres_image) if postgres_image in missing else postgres_image
    )


@dataclass
class DockerReference(ReferenceServer):
    """Prefect (and optionally PostgreSQL) in containers; use as a context manager like LocalReference."""

    workdir: Path
    image: str = DEFAULT_REFERENCE_IMAGE
    postgres_image: str | None = None  # None: SQLite inside the Prefect container
    #: The Prefect release in ``image`` (``--reference-version``): which locally built images stand in for it.
    version: str = PREFECT_REFERENCE_VERSION
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    startup_seconds: float = field(default=0.0, init=False)
    _containers: list = field(default_factory=list, init=False, repr=False)
    _network: object = field(default=None, init=False, repr=False)
    _api_url: str = field(default="", init=False)

    @property
    def api_url(self) -> str:
        return self._api_url

    def start(self) -> None:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.network import Network
        from testcontainers.core.wait_strategies import HttpWaitStrategy

        started = time.monotonic()
        client = docker_client()
        self.image, self.postgres_image = usable_images(
            client, self.image, self.postgres_image, self.workdir / "reference-images-build.log", self.version
        )
        labels = {RUN_LABEL: self.run_id}
        env = {**FAST_SERVICE_SETTINGS, "PREFECT_SERVER_API_HOST": "0.0.0.0", "PREFECT_HOME": "/tmp/prefect-home"}
        try:
            if self.postgres_image:
                self._network = Network(docker_network_kw={"labels": labels}).create()
                postgres = (
                    DockerContainer(self.postgres_image, labels=labels)
                    .with_env("POSTGRES_USER", "prefect")
                    .with_env("POSTGRES_PASSWORD", "prefect")
                    .with_env("POSTGRES_DB", "prefect")
                    .with_network(self._network)
                    .with_network_aliases("postgres")
                )
                self._containers.append(postgres)
                postgres.start()
                self._wait_for_postgres(postgres)
                env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
                    "postgresql+asyncpg://prefect:prefect@postgres:5432/prefect"
                )
            # A host port of its own, bound: Docker gives a published-but-unbound port a new number on every restart,
            # and the durability checks' restart must leave the server at the URL every client was given.
            prefect = DockerContainer(self.image, labels=labels).with_bind_ports(4200, free_port())
            for key, value in env.items():
                prefect.with_env(key, value)
            prefect.with_command(["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200", "--no-ui"])
            if self._network is not None:
                prefect.with_network(self._network)
            prefect.waiting_for(
                HttpWaitStrategy(4200, "/api/health")
                .for_response_predicate(lambda body: body.strip() == "true")
                .with_startup_timeout(READY_TIMEOUT)
                .with_poll_interval(0.25)
            )
            self._containers.append(prefect)
            prefect.start()
            self._api_url = f"http://{prefect.get_container_host_ip()}:{prefect.get_exposed_port(4200)}/api"
        except HarnessError:
            self.stop()
            raise
        except Exception as exc:
            self._save_logs()
            self.stop()
            raise HarnessError(
                "The containerized reference "
                f"({self.image}{' + ' + self.postgres_image if self.postgres_image else ''}) "
                f"did not become ready: {type(exc).__name__}: {str(exc)[:300]}. Logs: {self.log_path}"
            ) from None
        self.startup_seconds = time.monotonic() - started

    @property
    def restart_how(self) -> str:
        return "its container restarted" + (
            ", PostgreSQL's staying up" if self.postgres_image else ", its SQLite file inside"
        )

    def restart(self) -> None:
        """Restart the server's container (Docker stops it and starts it again on its own file system, where the
        SQLite database is; PostgreSQL's container stays up): the durability checks' restart."""
        prefect = self._containers[-1]
        prefect.get_wrapped_container().restart(timeout=10)
        try:
            wait_for_health(
                self.api_url,
                timeout=READY_TIMEOUT,
                what="the restarted reference container",
                hint=f"see the container's log ({self.log_path} once the run ends)",
            )
        except WaitTimeout as exc:
            raise HarnessError(str(exc)) from None

    def _wait_for_postgres(self, postgres) -> None:
        def ready() -> bool:
            code, output = postgres.get_wrapped_container().exec_run(["pg_isready", "-h", "127.0.0.1", "-U", "prefect"])
            if code != 0:
                raise AssertionError(f"pg_isready exited {code}: {output.decode(errors='replace').strip()}")
            return True

        try:
            wait_until(
                ready,
                awaiting=f"PostgreSQL ({self.postgres_image}) to accept connections",
                timeout=READY_TIMEOUT,
                interval=0.25,
                hint="see the container's log in the report folder; the machine may be overloaded",
            )
        except WaitTimeout as exc:
            raise HarnessError(str(exc)) from None

    def _save_logs(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        parts = []
        for container in self._containers:
            try:
                stdout, stderr = container.get_logs()
                parts.append(
                    f"=== {container.image} ===\n{stdout.decode(errors='replace')}{stderr.decode(errors='replace')}"
                )
            except Exception:
                continue
        self.log_path.write_text("\n".join(parts))

    def stop(self) -> None:
        if self._containers:
            self._save_logs()
        for container in reversed(self._containers):
            try:
                container.stop()
            except Exception:
                pass
        self._containers.clear()
        if self._network is not None:
            try:
                self._network.remove()
            except Exception:
                pass
            self._network = None


def leftovers(run_id: str) -> list[str]:
    """Containers and networks of a run that still exist (for tests and for users' peace of mind)."""
    client = docker_client()
    names = [c.name for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})]
    names += [n.name for n in client.networks.list(filters={"label": f"{RUN_LABEL}={run_id}"})]
    return names
