"""One TLS context per process for every HTTP client the harness opens to a target.

httpx builds a new ``SSLContext`` (and reads the CA bundle) for each client, even for ``http://`` URLs: about
30 ms of CPU each time, paid several times per run and per pytest worker. The context is the one httpx would
build (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), made once. Imports nothing of the harness.
"""

from __future__ import annotations

import ssl
from functools import lru_cache

import httpx


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The ``verify=`` value for every ``httpx.Client``/``AsyncClient`` the harness creates."""
    return httpx.create_ssl_context()
