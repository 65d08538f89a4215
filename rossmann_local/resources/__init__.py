"""I/O behind typed Dagster resources: the shop databases and the Sync API client."""

from __future__ import annotations

import dagster as dg


def resolved(value: str | None) -> str | None:
    """A resource setting's value in and out of runs: Dagster resolves ``EnvVar`` fields only inside
    a run, while the main command and tests also use resources directly."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value
