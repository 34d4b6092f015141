"""Option types of the command line, shared by every command: a path option resolved where the user typed it, and
``-n``'s value."""

from __future__ import annotations

import argparse
from pathlib import Path


def absolute_path(value: str) -> Path:
    """A path option, resolved once against the directory the user ran the command in.

    Everything below the CLI (reference servers, real clients) runs in its own working directory, so a relative
    path must never travel further than this boundary.
    """
    return Path(value).expanduser().resolve()


def parallel_option(value: str) -> str:
    """``-n``: ``auto`` or a whole number of processes (0 and 1 both mean serially)."""
    if value != "auto" and not (value.isdigit()):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of processes, got {value!r}")
    return value
