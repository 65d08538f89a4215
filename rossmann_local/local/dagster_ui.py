"""A client of a running Dagster webserver (``make dev``, compose's), through the GraphQL API its UI
uses: launch a backfill of partitions, follow it, re-execute it from failure. And ``make dev`` started
as a process for as long as a caller needs it (the benchmarks, the tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
FINISHED = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")

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


LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""

RUN_STATUS = """
query($id: ID!) {
  runOrError(runId: $id) {
    __typename
    ... on Run { status }
    ... on PythonError { message }
  }
}"""
RUN_FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
CODE_LOCATION, REPOSITORY = "rossmann_local", "__repository__"


class DagsterUIError(RuntimeError):
    """The webserver answered with an error, or not in time."""


class DagsterUI:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        answer = httpx.post(f"{self.url}/graphql", timeout=60, json={"query": query, "variables": variables}).json()
        if "errors" in answer:
            raise DagsterUIError(f"{self.url}/graphql: {answer['errors']}")
        return answer["data"]

    def _backfill_id(self, answer: dict[str, Any]) -> str:
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise DagsterUIError(f"the backfill was not launched: {answer}")
        return answer["backfillId"]

    def launch_backfill(self, assets: Sequence[str], partitions: Sequence[str]) -> str:
        """What the UI's "Materialize" of these partitions of these assets sends; the backfill's id."""
        return self._backfill_id(self.graphql(LAUNCH_BACKFILL, {"params": {
            "assetSelection": [{"path": [asset]} for asset in assets], "partitionNames": list(partitions),
            "fromFailure": False}})["launchPartitionBackfill"])

    def reexecute_from_failure(self, backfill_id: str) -> str:
        """The backfill page's "Re-execute from failure"; the new backfill's id."""
        return self._backfill_id(self.graphql(REEXECUTE_BACKFILL, {"params": {
            "parentRunId": backfill_id, "strategy": "FROM_FAILURE"}})["reexecutePartitionBackfill"])

    def backfill_status(self, backfill_id: str) -> str:
        answer = self.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if answer["__typename"] != "PartitionBackfill":
            raise DagsterUIError(f"backfill {backfill_id}: {answer}")
        return answer["status"]

    def wait_for_backfill(self, backfill_id: str, timeout: float = 600) -> str:
        """The backfill's final status, polled as the backfill page polls it."""
        deadline = time.monotonic() + timeout
        while (status := self.backfill_status(backfill_id)) not in FINISHED:
            if time.monotonic() > deadline:
                raise DagsterUIError(f"backfill {backfill_id} did not finish within {timeout} s ({status})")
            time.sleep(1)
        return status


    def launch_partition_run(self, job: str, partition: str, dimensions: dict[str, str]) -> str:
        """What the UI's launch of one partition of a job sends (the run queue takes it); the run's id."""
        tags = [{"key": "dagster/partition", "value": partition},
                *({"key": f"dagster/partition/{name}", "value": key} for name, key in dimensions.items())]
        answer = self.graphql(LAUNCH_RUN, {"params": {
            "selector": {"repositoryLocationName": CODE_LOCATION, "repositoryName": REPOSITORY, "jobName": job},
            "executionMetadata": {"tags": tags}}})["launchRun"]
        if answer["__typename"] != "LaunchRunSuccess":
            raise DagsterUIError(f"the run was not launched: {answer}")
        return answer["run"]["runId"]

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while (status := self.graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]) not in RUN_FINISHED:
            if time.monotonic() > deadline:
                raise DagsterUIError(f"run {run_id} did not finish within {timeout} s ({status})")
            time.sleep(0.25)
        return status


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_dev(env: dict[str, str], log_path: Path, timeout: float = 180) -> Iterator[DagsterUI]:
    """``python -m rossmann_local.local.dev`` (what ``make dev`` runs) with ``env``, its output in
    ``log_path``; yields a client once the webserver answers, and stops it all on the way out."""
    port = free_port()
    with log_path.open("w") as log:
        dev = subprocess.Popen([sys.executable, "-m", "rossmann_local.local.dev", "-h", "127.0.0.1", "-p", str(port)],
                               env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if dev.poll() is not None:
                raise DagsterUIError(f"make dev exited with {dev.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise DagsterUIError(f"the webserver did not answer within {timeout} s:\n"
                                     f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield DagsterUI(url)
    finally:
        dev.send_signal(signal.SIGTERM)  # dev stops dagster dev, the broker and itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            dev.wait(timeout=90)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)  # whatever of the group is left
