"""``make dev`` (dagster dev with its daemon on the local stack) started for a test, and what the UI
sends to it over GraphQL (``rossmann_local.local.dagster_ui``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from rossmann_local.local.dagster_ui import REPO_ROOT, DagsterUI, running_dev

ROOT = REPO_ROOT
SHIFT_ASSETS = ("synced_cache", "shift_deliveries", "shift_transactions", "shift_stock_levels",
                "transactions_report", "delivery_report")


def dev_environment(data: Path, sync_api_url: str, dagster_home: Path | None = None) -> dict[str, str]:
    """This environment less its Dagster home, broker and rossmann settings; the data dir, the Sync API
    and (if given) the instance's home named."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "KAFKA_BOOTSTRAP_SERVERS")}
    env = {k: v for k, v in env.items() if not k.startswith("ROSSMANN_") or k == "ROSSMANN_TEST_PG_URL"}
    env.update(ROSSMANN_DATA_DIR=str(data), ROSSMANN_SYNC_API_URL=sync_api_url, TZ="UTC")
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    return env


@contextlib.contextmanager
def make_dev(data: Path, sync_api_url: str, log_path: Path, dagster_home: Path | None = None,
             extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """``make dev`` on ``data``, with the instance under the data dir or in ``dagster_home`` (and
    ``extra_env``); yields the webserver's URL once it answers."""
    with running_dev({**dev_environment(data, sync_api_url, dagster_home), **(extra_env or {})}, log_path) as ui:
        yield ui.url


def launch_backfill(url: str, keys: list[str]) -> str:
    """What the UI's "Materialize" of these partitions of the shift assets sends."""
    return DagsterUI(url).launch_backfill(SHIFT_ASSETS, keys)


def reexecute_from_failure(url: str, backfill_id: str) -> str:
    return DagsterUI(url).reexecute_from_failure(backfill_id)


def backfill_done(url: str, backfill_id: str, timeout: float = 600) -> str:
    return DagsterUI(url).wait_for_backfill(backfill_id, timeout)


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[Any]:
    return sorted(instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id})),
                  key=lambda r: r.create_timestamp)


def most_at_once(records: list[Any]) -> int:
    """The most runs that were running at the same moment."""
    edges = sorted([(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak
