"""The code location Dagster loads (workspace.yaml, ``dagster dev -m rossmann_local.definitions``).

Each run is a process of its own that imports Dagster and then this module. Python's collector
scanned Dagster's objects again and again while the code location's modules were imported, about
0.5 s of every run's start: frozen first (``gc.freeze``, the standard library's way to leave objects
that live as long as the process out of every later collection), they are left alone; the code
location's own are frozen once built, for the collections during the run's steps."""

import gc

gc.freeze()

from rossmann_local.defs import build_definitions  # noqa: E402  (after the freeze, on purpose)

defs = build_definitions()
gc.freeze()
