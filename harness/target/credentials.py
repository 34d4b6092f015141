"""Credentials for targets that need them, taken from the variables real Prefect clients read.

``PREFECT_API_KEY`` (sent as ``Authorization: Bearer``) and ``PREFECT_API_AUTH_STRING`` (``user:password``,
sent as HTTP Basic, what a server started with ``PREFECT_SERVER_API_AUTH_STRING`` expects) reach exactly two
places: the harness's own HTTP client and the actors' environments. Transcripts never record headers, and
:func:`redact` keeps the values out of anything the harness writes.
"""

from __future__ import annotations

import base64
import os

CREDENTIAL_VARIABLES = ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")


def client_environment() -> dict[str, str]:
    """The credential variables set for this run, to hand to the real clients."""
    return {name: os.environ[name] for name in CREDENTIAL_VARIABLES if os.environ.get(name)}


def api_headers() -> dict[str, str]:
    """The Authorization header the real client would send (the auth string wins, as in Prefect's client)."""
    auth_string = os.environ.get("PREFECT_API_AUTH_STRING")
    if auth_string:
        return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}
    api_key = os.environ.get("PREFECT_API_KEY")
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    return {}


def redact(text: str) -> str:
    """``text`` with every credential value (and its Basic encoding) replaced by ``***``."""
    for value in client_environment().values():
        text = text.replace(value, "***").replace(base64.b64encode(value.encode()).decode(), "***")
    return text
