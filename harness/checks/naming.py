"""Unique names for everything a run creates on the target.

Users point this suite at servers that hold real data, so every flow, deployment, pool and run it creates
carries a per-run prefix (``pc-<UTC time>-<random>``); nothing without that prefix is ever read as a fixture,
changed or deleted.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

PREFIX_PATTERN = re.compile(r"^pc-\d{8}t\d{6}-[0-9a-f]{6}$")


def new_run_prefix(now: dt.datetime | None = None) -> str:
    """A prefix unique to one run of the suite, readable enough to find its objects on the target."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"pc-{now:%Y%m%dt%H%M%S}-{secrets.token_hex(3)}"


def unique_name(prefix: str, *parts: str) -> str:
    """``prefix`` plus slugs of ``parts`` plus a short random suffix, safe for Prefect object names."""
    slugs = [re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts if p]
    return "-".join([prefix, *[s for s in slugs if s], secrets.token_hex(2)])
