"""The commands people run: ``prefect-conformance`` (:mod:`.cli`), ``make matrix`` (:mod:`.matrix`),
``make bench`` (:mod:`.bench`) and ``make flake-check`` (:mod:`.flake`).

The top layer: may import every other part of the harness; nothing imports it but the entry points (and
:mod:`.bench`/:mod:`.flake`, which share the CLI's path handling).
"""
