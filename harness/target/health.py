"""The wait for a server to answer ``GET /health`` with ``true``: how the harness knows a reference, a container or
a target has come up (or come back)."""

from __future__ import annotations

from typing import Callable

import httpx

from harness.target.api import excerpt
from harness.target.tls import tls_context
from harness.waits import DEFAULT_HINT, wait_until


def wait_for_health(
    api_url: str,
    *,
    timeout: float,
    what: str = "the server",
    alive: Callable[[], None] | None = None,
    interval: float = 0.1,
    hint: str = DEFAULT_HINT,
) -> None:
    """``GET {api_url}/health`` answers ``true``. ``alive`` raises when the server can no longer come up (its
    process exited), which ends the wait at once with that exception."""
    url = api_url.rstrip("/") + "/health"
    with httpx.Client(timeout=2.0, verify=tls_context()) as http:

        def probe() -> bool:
            if alive is not None:
                alive()
            try:
                response = http.get(url)
            except httpx.HTTPError as exc:
                raise AssertionError(f"GET /health: {type(exc).__name__}") from None
            if response.status_code == 200 and response.text.strip() == "true":
                return True
            raise AssertionError(f"GET /health answered {response.status_code} {excerpt(response.text, 120)}")

        wait_until(
            probe, awaiting=f"{what} to answer GET {url} with true", timeout=timeout, interval=interval, hint=hint
        )
