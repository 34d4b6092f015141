"""``make image``: a Docker image of the suite itself, for a machine with nothing but Docker.

``docker run --rm --network host -v "$PWD/reports:/reports" prefect-conformance run --target URL`` runs the suite
(real clients included: they run inside the container) and leaves the reports in ``./reports/latest``; without
``--target`` the bundled reference runs inside the container too.

Built as the reference's images are (:mod:`harness.reference.images`), from Debian's and PyPI's packages, so an
engine without a registry can build it: the reference's Prefect image (Debian bookworm, Python 3.11, the pinned
Prefect in ``/opt/prefect``) is exported, the suite's wheel is installed into its Prefect environment with uv (in a
chroot, with the host's network and CA bundle), and the result is imported with ``prefect-conformance`` as its
entry point. Only the suite's own dependencies are downloaded; Prefect is already there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import __version__
from harness.locations import checkout_root
from harness.reference.images import ensure_images, run

IMAGE = f"prefect-conformance:{__version__}"
#: Where the image's runs write their reports: mount a folder there.
REPORTS = "/reports"


#: The image's label holding a digest of the sources it was built from: an image of other sources is rebuilt.
SOURCE_LABEL = "org.prefect-conformance.source"


def tracked_files(root: Path) -> list[str]:
    files = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], check=True, capture_output=True).stdout
    return [name for name in files.decode().split("\0") if name and (root / name).is_file()]


def source_digest(root: Path) -> str:
    """A digest of the checkout's tracked files as they are in the working tree."""
    digest = hashlib.sha256()
    for name in sorted(tracked_files(root)):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_from(tag: str) -> str:
    """The source digest ``tag`` was built from, or "" (no such image, or no label)."""
    done = subprocess.run(
        ["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{SOURCE_LABEL}"}}}}', tag],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def build_wheel(root: Path, into: Path) -> Path:
    """The suite's wheel, built from the checkout's tracked files (as they are in the working tree), so nothing
    else of the checkout (reports, a venv, build leftovers) can reach the image."""
    source = into / "source"
    for name in tracked_files(root):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, source / name)
    uv = Path(sys.executable).with_name("uv")  # what `make venv` installs
    if uv.exists():
        run([str(uv), "build", "--quiet", "--wheel", "--out-dir", str(into), str(source)])
    else:
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(into), str(source)])
    return next(into.glob("prefect_conformance-*.whl"))


def export_filesystem(image: str, rootfs: Path) -> None:
    """The image's filesystem, unpacked into ``rootfs`` (a container is created for it, never started)."""
    container = subprocess.run(["docker", "create", image], check=True, capture_output=True, text=True).stdout.strip()
    try:
        rootfs.mkdir(parents=True)
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-C", str(rootfs), "-x"], stdin=export.stdout, check=True)
        if export.wait() != 0:
            raise RuntimeError(f"docker export of {image} failed")
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True)


def install_suite(rootfs: Path, wheel: Path) -> None:
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    shutil.copy(ca, rootfs / "tmp" / "host-ca.crt")
    shutil.copy(wheel, rootfs / "tmp" / wheel.name)
    resolv = rootfs / "etc" / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copy("/etc/resolv.conf", resolv)  # the chroot resolves PyPI as the host does
    chroot_env = [
        "env",
        "-i",
        "PATH=/opt/prefect/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
        "SSL_CERT_FILE=/tmp/host-ca.crt",
    ]
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
            f"/tmp/{wheel.name}",
        ]
    )
    for leftover in ("tmp/host-ca.crt", f"tmp/{wheel.name}"):
        (rootfs / leftover).unlink()
    resolv.write_text("")  # Docker provides the container's own
    (rootfs / REPORTS.lstrip("/")).mkdir(exist_ok=True)


def import_image(rootfs: Path, tag: str, digest: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(
        [
            "docker",
            "import",
            "-c",
            f"LABEL {SOURCE_LABEL}={digest}",
            "-c",
            "ENV PATH=/opt/prefect/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "-c",
            "ENV LANG=C.UTF-8",
            "-c",
            f"ENV PREFECT_CONFORMANCE_REPORT_DIR={REPORTS}",
            "-c",
            f"WORKDIR {REPORTS}",
            "-c",
            'ENTRYPOINT ["prefect-conformance"]',
            "-c",
            'CMD ["--help"]',
            "-",
            tag,
        ],
        stdin=tar.stdout,
        stdout=subprocess.DEVNULL,
    )
    tar.wait()
    run(["docker", "tag", tag, "prefect-conformance:latest"], stdout=subprocess.DEVNULL)


def ensure_image(force: bool = False) -> str:
    """The suite's image, built unless it exists (or ``force``): its tag."""
    root = checkout_root()
    if root is None:
        raise SystemExit("make image builds from a checkout of prefect-conformance (its pyproject.toml and sources)")
    digest = source_digest(root)
    if built_from(IMAGE) == digest and not force:
        print(f"image: {IMAGE} of these sources exists; nothing to build", flush=True)
        return IMAGE
    started = time.monotonic()
    prefect, _ = ensure_images()
    with tempfile.TemporaryDirectory(prefix="prefect-conformance-image-") as tmp:
        wheel = build_wheel(root, Path(tmp) / "wheel")
        rootfs = Path(tmp) / "rootfs"
        export_filesystem(prefect, rootfs)
        install_suite(rootfs, wheel)
        import_image(rootfs, IMAGE, digest)
    size = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(
        f"image: built {IMAGE} (and prefect-conformance:latest), {int(size) / 1e6:.0f} MB, in "
        f"{time.monotonic() - started:.0f}s",
        flush=True,
    )
    return IMAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.commands.image", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="build even if the image exists")
    ensure_image(parser.parse_args(argv).force)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
