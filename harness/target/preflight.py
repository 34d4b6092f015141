"""The server under test, and the preflight that decides whether it can be tested at all.

``TARGET`` is the API root, the same value a user would put in ``PREFECT_API_URL`` (it ends in ``/api``).
Preflight asks ``GET /health`` and ``GET /admin/version`` before any scenario runs, so that a wrong URL or a
dead server ends in one readable line within seconds instead of a page of failed scenarios.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from harness.errors import TargetUnavailable, WaitTimeout
from harness.target.api import excerpt
from harness.target.credentials import api_headers
from harness.target.tls import tls_context
from harness.waits import wait_until

PREFLIGHT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Target:
    """A Prefect-compatible API that passed preflight."""

    api_url: str
    version: str
    #: ``url`` for a user-supplied target, or the reference mode (``local``, ``docker``, ...).
    kind: str = "url"


def normalize_api_url(api_url: str) -> str:
    """Validate the shape of ``api_url`` and drop a trailing slash; raise TargetUnavailable on nonsense."""
    url = api_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TargetUnavailable(
            f"Target {api_url!r} is not an http(s) URL. Hint: pass the API root, e.g. http://127.0.0.1:4200/api"
        )
    return url


def preflight(api_url: str, *, kind: str = "url", timeout: float = PREFLIGHT_TIMEOUT) -> Target:
    """Check that ``api_url`` is a healthy Prefect API and return it with its version.

    Raises :class:`TargetUnavailable` with a single line naming the URL, what failed and the likely fix.
    A 503 (a server still starting, or SQLite busy) is retried until ``timeout``; nothing else is.
    """
    url = normalize_api_url(api_url)
    deadline = time.monotonic() + timeout
    with httpx.Client(
        timeout=httpx.Timeout(min(5.0, timeout), connect=min(3.0, timeout)), headers=api_headers(), verify=tls_context()
    ) as http:
        health = _get_json(http, url, "/health", deadline)
        if health is not True:
            raise TargetUnavailable(
                f"Target {url} is not healthy: GET {url}/health answered {excerpt(json.dumps(health), 120)} "
                "instead of true. Hint: check the server's log; Prefect answers true once its database is ready."
            )
        version = _get_json(http, url, "/admin/version", deadline)
    if not isinstance(version, str) or not version:
        raise TargetUnavailable(
            f"Target {url} answered GET /admin/version with {excerpt(json.dumps(version), 120)}, not a version "
            'string. Hint: Prefect answers a JSON string such as "3.9.1".'
        )
    return Target(api_url=url, version=version, kind=kind)


def _get_json(http: httpx.Client, url: str, path: str, deadline: float) -> object:
    full = url + path
    answers: list[httpx.Response] = []

    def answered() -> httpx.Response:
        try:
            response = http.get(full)
        except httpx.ConnectError as exc:
            raise TargetUnavailable(
                f"Cannot reach target {url}: {_reason(exc)}. Hint: is the server running and listening on that "
                "host and port?"
            ) from None
        except httpx.TimeoutException:
            raise TargetUnavailable(
                f"Target {url} did not answer GET {path} in time. Hint: is the server overloaded or stuck?"
            ) from None
        except httpx.HTTPError as exc:
            raise TargetUnavailable(f"Target {url} broke the connection on GET {path}: {_reason(exc)}.") from None
        answers.append(response)
        if response.status_code == 503:  # a server still starting, or SQLite busy: ask again until the deadline
            raise AssertionError(f"503 {excerpt(response.text, 80)}")
        return response

    try:
        response = wait_until(
            answered,
            awaiting=f"{url} to answer GET {path} with something other than 503",
            timeout=max(0.0, deadline - time.monotonic()),
            interval=0.25,
        )
    except WaitTimeout:
        response = answers[-1]  # still 503: judged below like any other answer
    content_type = response.headers.get("content-type", "")
    if response.status_code == 404 or "html" in content_type:
        hint = (
            f"TARGET must be the API root, e.g. {url}/api"
            if not urlsplit(url).path.rstrip("/").endswith("/api")
            else "TARGET must be the API root of a Prefect server (the value of PREFECT_API_URL)"
        )
        what = "an HTML page" if "html" in content_type else "404"
        raise TargetUnavailable(
            f"Target {url} answered {what} to GET {full}; it is not a Prefect API root. Hint: {hint}."
        )
    if response.status_code in (401, 403):
        sent = "with" if http.headers.get("Authorization") else "without"
        raise TargetUnavailable(
            f"Target {url} answered {response.status_code} to GET {path} {sent} credentials. Hint: set "
            "PREFECT_API_AUTH_STRING (user:password) or PREFECT_API_KEY to what the server expects."
        )
    if response.status_code != 200:
        raise TargetUnavailable(
            f"Target {url} answered {response.status_code} to GET {path}: {excerpt(response.text, 160)}. "
            "Hint: check the server's log."
        )
    try:
        return response.json()
    except ValueError:
        raise TargetUnavailable(
            f"Target {url} answered GET {path} with a body that is not JSON ({content_type or 'no content-type'}): "
            f"{excerpt(response.text, 120)}. Hint: is this a Prefect API root?"
        ) from None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return excerpt(text, 120)
