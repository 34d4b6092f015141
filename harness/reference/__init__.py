"""The bundled reference server, real Prefect: a local process (SQLite or PostgreSQL), containers
(testcontainers, SQLite or PostgreSQL), the images for engines without a registry, and the environment every
reference and real client starts with, and the Prefect releases other than the pinned one (each in its own
cached environment, with what ``releases.toml`` knows of them).

May import :mod:`harness.target`, :mod:`harness.processes`, :mod:`harness.waits` and
:mod:`harness.locations`.
"""
