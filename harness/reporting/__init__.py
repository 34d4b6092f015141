"""What a run found and how it is told: per-check results and outcomes, expectation files, the report folder's
history, differences between runs, and the JUnit, Markdown and HTML reports.

May import :mod:`harness.errors` and :mod:`harness.clients.transcript`; never a server or a client.
"""
