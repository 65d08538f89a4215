"""``make dev`` (dagster dev with its daemon on the local stack) started for a test, and what the UI
sends to it over GraphQL: launch a backfill, follow it, re-execute it from failure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIFT_ASSETS = ("synced_cache", "shift_deliveries", "shift_transactions", "shift_stock_levels",
                "transactions_report", "delivery_report")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def make_dev(data: Path, sync_api_url: str, log_path: Path, dagster_home: Path | None = None) -> Iterator[str]:
    """``python -m rossmann_local.local.dev`` (what ``make dev`` runs) on ``data``, with the instance
    under the data dir or in ``dagster_home``; yields the webserver's URL once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "KAFKA_BOOTSTRAP_SERVERS")}
    env = {k: v for k, v in env.items() if not k.startswith("ROSSMANN_") or k == "ROSSMANN_TEST_PG_URL"}
    env.update(ROSSMANN_DATA_DIR=str(data), ROSSMANN_SYNC_API_URL=sync_api_url, TZ="UTC")
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    with log_path.open("w") as log:
        dev = subprocess.Popen([sys.executable, "-m", "rossmann_local.local.dev", "-h", "127.0.0.1", "-p", str(port)],
                               env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if dev.poll() is not None:
                pytest.fail(f"make dev exited with {dev.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the webserver did not answer within 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        dev.send_signal(signal.SIGTERM)  # dev stops dagster dev, the broker and itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            dev.wait(timeout=90)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)  # whatever of the group is left


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}"""

REEXECUTE_BACKFILL = """
mutation($params: ReexecutionParams!) {
  reexecutePartitionBackfill(reexecutionParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


def graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{url}/graphql", timeout=60, json={"query": query, "variables": variables}).json()
    assert "errors" not in answer, answer
    return answer["data"]


def launch_backfill(url: str, keys: list[str]) -> str:
    """What the UI's "Materialize" of these partitions of the shift assets sends."""
    answer = graphql(url, LAUNCH_BACKFILL, {"params": {
        "assetSelection": [{"path": [asset]} for asset in SHIFT_ASSETS], "partitionNames": keys,
        "fromFailure": False}})["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer
    return answer["backfillId"]


def reexecute_from_failure(url: str, backfill_id: str) -> str:
    """The backfill page's "Re-execute from failure"."""
    answer = graphql(url, REEXECUTE_BACKFILL, {"params": {"parentRunId": backfill_id, "strategy": "FROM_FAILURE"}}
                     )["reexecutePartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer
    return answer["backfillId"]


def backfill_done(url: str, backfill_id: str, timeout: float = 600) -> str:
    """The backfill's final status, polled as the backfill page polls it."""
    deadline = time.monotonic() + timeout
    while True:
        answer = graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert answer["__typename"] == "PartitionBackfill", answer
        if answer["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            return answer["status"]
        assert time.monotonic() < deadline, f"the backfill did not finish within {timeout} s"
        time.sleep(2)


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
