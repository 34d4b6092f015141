"""The commands people run: ``prefect-conformance`` (:mod:`.cli`, a run's steps in :mod:`.conformance`),
``make matrix`` (:mod:`.matrix`), ``make bench`` (:mod:`.bench`) and ``make flake-check`` (:mod:`.flake`).

The top layer of the harness: may import every other part of it; nothing imports it but the entry points.
"""
