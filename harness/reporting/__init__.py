"""What a run found and how it is told: per-check results and outcomes, expectation files, the report folder's
history, differences between runs, the catalogue and claims, the API coverage map's data, and the JUnit, Markdown and
HTML reports.

May import the layers below it to read what they recorded (transcripts, the releases table), but never starts a
server, a client or a process, nor talks to the target (a forbidden contract in pyproject.toml).
"""
