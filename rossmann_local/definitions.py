"""The code location Dagster loads (workspace.yaml, ``dagster dev -m rossmann_local.definitions``)."""

from rossmann_local.defs import build_definitions

defs = build_definitions()
