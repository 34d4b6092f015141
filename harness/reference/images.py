"""``make reference-images``: build the reference's Docker images from Debian's and PyPI's packages.

For machines whose Docker engine cannot pull (no registry). One Debian root filesystem (``mmdebstrap
--variant=minbase bookworm``) gets Python 3.11 and PostgreSQL 15 from Debian and the pinned Prefect from PyPI;
it is imported as the Prefect image, and the PostgreSQL image is derived from it with an entrypoint that honours
the official image's ``POSTGRES_USER``/``POSTGRES_DB`` (authentication is ``trust``: these containers only ever
live on a private network for one run). Images are tagged with the Prefect version and not rebuilt when the tag
exists.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, TextIO

from harness import PREFECT_REFERENCE_VERSION


def prefect_image(version: str = PREFECT_REFERENCE_VERSION) -> str:
    return f"prefect-conformance/prefect:{version}-bookworm"


def postgres_image(version: str = PREFECT_REFERENCE_VERSION) -> str:
    return f"prefect-conformance/postgres:15-bookworm-{version}"


PREFECT_IMAGE = prefect_image()
POSTGRES_IMAGE = postgres_image()
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ["python3", "python3-venv", "ca-certificates", "tzdata", "postgresql-15", "procps"]

POSTGRES_ENTRYPOINT = """#!/bin/sh
# PostgreSQL from Debian's package, started like the official image: POSTGRES_USER and POSTGRES_DB.
set -e
PGBIN=/usr/lib/postgresql/15/bin
PGDATA=/var/lib/postgresql/data
USER_NAME="${POSTGRES_USER:-postgres}"
DB_NAME="${POSTGRES_DB:-$USER_NAME}"
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  su postgres -s /bin/sh -c "$PGBIN/initdb -D $PGDATA --username=$USER_NAME --auth=trust" >/dev/null
  echo "host all all 0.0.0.0/0 trust" >> "$PGDATA/pg_hba.conf"
  if [ "$DB_NAME" != "postgres" ]; then
    echo "CREATE DATABASE \\"$DB_NAME\\";" | su postgres -s /bin/sh -c "$PGBIN/postgres --single -D $PGDATA postgres"
    >/dev/null
  fi
fi
exec su postgres -s /bin/sh -c "exec $PGBIN/postgres -D $PGDATA -c listen_addresses='*'"
"""


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


#: Where the build's commands and their output go: the terminal for `make reference-images`, a log file when a
#: run builds the images on first use (see :func:`ensure_images`).
_output: TextIO | None = None


def run(argv: list[str], **kwargs) -> None:
    print("+ " + " ".join(argv), flush=True, file=_output or sys.stdout)
    if _output is not None:
        kwargs.setdefault("stdout", _output)
        kwargs.setdefault("stderr", _output)
    subprocess.run(argv, check=True, **kwargs)


def requirements(version: str) -> list[str]:
    """What uv installs for ``version``: the pinned release as the project resolves it; another release with its
    dependencies as they stood on PyPI at its upload, and its pins (as :mod:`harness.reference.releases` does)."""
    if version == PREFECT_REFERENCE_VERSION:
        return [f"prefect=={version}"]
    from harness.reference.releases import exclude_newer, pins

    return ["--exclude-newer", exclude_newer(version), f"prefect=={version}", *pins(version)]


def build_rootfs(rootfs: Path, version: str = PREFECT_REFERENCE_VERSION) -> None:
    # mmdebstrap fetches the packages in parallel and unpacks them in one dpkg run: 43 s where debootstrap took 63 s.
    if shutil.which("mmdebstrap") is None:
        # `make test` may install the browser at the same time: wait for dpkg's lock instead of failing on it.
        wait = ["-o", "DPkg::Lock::Timeout=600"]
        run(["apt-get", *wait, "update", "-qq"])
        run(
            ["apt-get", *wait, "install", "-y", "-qq", "mmdebstrap"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            "bookworm",
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        stdout=subprocess.DEVNULL,
    )
    # pip and uv inside the chroot need the host's CA bundle (the machine may use its own CA) and a clean environment.
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    shutil.copy(ca, rootfs / "tmp" / "host-ca.crt")
    chroot_env = [
        "env",
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
        "PIP_CERT=/tmp/host-ca.crt",
        "SSL_CERT_FILE=/tmp/host-ca.crt",
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
    ]
    run(["chroot", str(rootfs), *chroot_env, "python3", "-m", "venv", "/opt/prefect"])
    # uv (from PyPI, bootstrapped with pip) installs Prefect in a fifth of pip's time; it stays in the venv (a few MB).
    run(["chroot", str(rootfs), *chroot_env, "/opt/prefect/bin/pip", "install", "-q", "--no-cache-dir", "uv"])
    run(
        [
            "chroot",
            str(rootfs),
            *chroot_env,
            "/opt/prefect/bin/uv",
            "pip",
            "install",
            "--quiet",
            "--no-cache",
            "--compile-bytecode",
            "--python",
            "/opt/prefect/bin/python",
            *requirements(version),
        ]
    )
    (rootfs / "tmp" / "host-ca.crt").unlink()
    entrypoint = rootfs / "usr" / "local" / "bin" / "postgres-entrypoint"
    entrypoint.write_text(POSTGRES_ENTRYPOINT)
    entrypoint.chmod(0o755)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        shutil.rmtree(rootfs / cache, ignore_errors=True)


def import_images(rootfs: Path, version: str = PREFECT_REFERENCE_VERSION) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(
        [
            "docker",
            "import",
            "-c",
            "ENV PATH=/opt/prefect/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "-c",
            "ENV LANG=C.UTF-8",
            "-c",
            "EXPOSE 4200",
            "-c",
            'CMD ["prefect", "server", "start", "--host", "0.0.0.0"]',
            "-",
            prefect_image(version),
        ],
        stdin=tar.stdout,
        stdout=subprocess.DEVNULL,
    )
    tar.wait()
    # The PostgreSQL image is the same filesystem with another command. Committing a never-started container with
    # new settings adds no layer and takes a second, where `docker build FROM ...` took half a minute.
    container = subprocess.run(
        ["docker", "create", prefect_image(version)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        run(
            [
                "docker",
                "commit",
                "-c",
                "EXPOSE 5432",
                "-c",
                'CMD ["/usr/local/bin/postgres-entrypoint"]',
                container,
                postgres_image(version),
            ],
            stdout=subprocess.DEVNULL,
        )
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True)


def ensure_images(
    force: bool = False, output: TextIO | None = None, version: str = PREFECT_REFERENCE_VERSION
) -> tuple[str, str]:
    """Build both images of ``version`` unless they exist; return their tags. ``output``: where the build's output
    goes."""
    global _output
    _output = output
    prefect, postgres = prefect_image(version), postgres_image(version)
    with _building():
        return _ensure(prefect, postgres, force, output, version)


def images_ready(version: str = PREFECT_REFERENCE_VERSION) -> bool:
    """Whether both images of ``version`` exist, once a build in progress on this machine has finished."""
    with _building():
        return image_exists(prefect_image(version)) and image_exists(postgres_image(version))


@contextlib.contextmanager
def _building() -> Iterator[None]:
    """One build at a time on a machine (the images are the Docker engine's, shared by all): a second caller waits
    for the first one's build (``make test`` starts one beside the tests) and then finds the images there."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / "prefect-conformance-reference-images.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure(prefect: str, postgres: str, force: bool, output: TextIO | None, version: str) -> tuple[str, str]:
    if force or not (image_exists(prefect) and image_exists(postgres)):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="prefect-conformance-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            build_rootfs(rootfs, version)
            import_images(rootfs, version)
        print(
            f"reference-images: built {prefect} and {postgres} in {time.monotonic() - started:.0f}s",
            flush=True,
            file=output or sys.stdout,
        )
    else:
        print(
            f"reference-images: {prefect} and {postgres} exist; nothing to build", flush=True, file=output or sys.stdout
        )
    return prefect, postgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.reference.images", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the tags exist")
    parser.add_argument(
        "--version", default=PREFECT_REFERENCE_VERSION, help="the Prefect release (default: the pinned one)"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("reference-images: mmdebstrap and chroot need root", file=sys.stderr)
        return 2
    ensure_images(args.force, version=args.version)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
