"""Handshake: what every real client asks before anything else.

Prefect's clients read ``GET /admin/version`` when a client context starts (``raise_for_api_version_mismatch``)
and refuse a server whose major version differs from theirs: "Found incompatible versions: client: 3.9.1,
server: 0.1.0. Major versions must match." Every 3.x release does this (3.0.11 to 3.9.1), so the answer must be
a JSON string that ``packaging`` reads as a version with major 3. Which client releases a server works with
beyond that is what ``make matrix`` shows.
"""

from __future__ import annotations

import pytest
from packaging.version import InvalidVersion, Version

from harness.target.api import ApiClient

pytestmark = pytest.mark.handshake

MAJOR = 3


def test_admin_version_is_a_release_prefect_3_clients_accept(api: ApiClient) -> None:
    """``GET /admin/version`` answers a version with major 3: every Prefect 3 client compares it with its own."""
    answer = api.get("/admin/version")
    assert isinstance(answer, str), (
        f"GET /admin/version answered {answer!r}, not a JSON string; Prefect's clients read a version string "
        'from it. Hint: answer the Prefect release your server is compatible with, e.g. "3.9.1"'
    )
    try:
        version = Version(answer)
    except InvalidVersion:
        raise AssertionError(
            f"GET /admin/version answered {answer!r}, which Prefect's clients cannot read as a version (packaging: "
            'InvalidVersion), so every client context fails to start. Hint: answer a PEP 440 version such as "3.9.1"'
        ) from None
    assert version.major == MAJOR, (
        f"GET /admin/version answered {answer!r}, major version {version.major}; Prefect 3 clients refuse it "
        f'("Found incompatible versions ... Major versions must match"). Hint: answer the Prefect 3 release your '
        'server is compatible with, e.g. "3.9.1"'
    )
