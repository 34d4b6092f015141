"""The bundled reference server, real Prefect: a local process (SQLite or PostgreSQL), containers
(testcontainers, SQLite or PostgreSQL), the images for engines without a registry, the environment every
reference and real client starts with, the Prefect releases other than the pinned one (each in its own cached
environment, with what ``releases.toml`` knows of them), and each release's OpenAPI document.

May import :mod:`harness.processes`, :mod:`harness.target` and the layers below.
"""
