"""A client of a running Dagster webserver (``make dev``, compose's), through the GraphQL API its UI
uses: launch runs and backfills, follow them, re-execute from failure, read a sensor's ticks and a
run's outcome. And ``dagster dev`` (or ``make dev``) started as a process for as long as a caller
needs it: the commands (``make day``, ``make live``, ``make backfill``), the benchmarks, the tests."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from rossmann_local.local.instance import instance_home
from rossmann_local.local.processes import die_with_parent, free_port, stop_process_group
from rossmann_local.local.stack import LocalStack
from rossmann_local.settings import ConfigError, data_dir

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

ERROR = "error { className message errorChain { error { className message } } }"
METADATA = """metadataEntries { label __typename ... on IntMetadataEntry { intValue intRepr }
  ... on FloatMetadataEntry { floatValue } ... on TextMetadataEntry { text }
  ... on JsonMetadataEntry { jsonString } }"""
RUN_OUTCOME = """
query($id: ID!, $after: String) {
  runOrError(runId: $id) {
    __typename
    ... on Run { runId status jobName startTime endTime tags { key value }
      eventConnection(afterCursor: $after, limit: 5000) { cursor hasMore events { __typename
        ... on ExecutionStepFailureEvent { stepKey ERROR }
        ... on ExecutionStepOutputEvent { stepKey outputName METADATA }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success severity description } }
      } } }
    ... on PythonError { message }
  }
}""".replace("ERROR", ERROR).replace("METADATA", METADATA)

RUNS = """
query($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}"""

SENSOR = """
query($selector: SensorSelector!, $limit: Int) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status
      typeSpecificData { ... on SensorData { lastCursor } }
      ticks(limit: $limit) { timestamp endTimestamp status runIds skipReason error { message } } } }
    ... on PythonError { message }
  }
}"""

TERMINATE_RUN = """
mutation($id: String!) {
  terminateRun(runId: $id) { __typename ... on PythonError { message } }
}"""
UNFINISHED = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"]

SENSOR_ID = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { __typename ... on Sensor { id } ... on PythonError { message } }
}"""

STOP_SENSOR = """
mutation($id: String!) {
  stopSensor(id: $id) { __typename ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message } }
}"""

SET_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on Sensor { sensorState { status } }
    ... on PythonError { message } }
}"""
RUN_FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
LAUNCH_TIMEOUT_S = 600  # a launch of a big ranged run waits for Dagster to store its planned events
CODE_LOCATION, REPOSITORY = "rossmann_local", "__repository__"


def engine_time() -> float:
    """Unix time as Dagster stamps runs and ticks. Bookkeeping only: which runs and ticks came after a
    moment of a command (no fact of the simulated world is dated by it)."""
    return time.time()


class DagsterUIError(RuntimeError):
    """The webserver answered with an error, or not in time."""


class RunOutcome:
    """What the UI's run page shows of a finished run, as read through GraphQL."""

    def __init__(self, run: dict[str, Any], events: list[dict[str, Any]]) -> None:
        self.run_id, self.status, self.job = run["runId"], run["status"], run["jobName"]
        self.start_time, self.end_time = run["startTime"], run["endTime"]
        self.tags = {t["key"]: t["value"] for t in run["tags"]}
        self.events = events

    @property
    def success(self) -> bool:
        return self.status == "SUCCESS"

    def output(self, step: str, output: str = "result") -> dict[str, Any] | None:
        """An output's metadata, each entry as its value (``None`` when the step did not yield it)."""
        for event in self.events:
            if (event["__typename"] == "ExecutionStepOutputEvent" and event["stepKey"] == step
                    and event["outputName"] == output):
                return {entry["label"]: _metadata_value(entry) for entry in event["metadataEntries"]}
        return None

    def check_evaluations(self) -> list[dict[str, Any]]:
        return [e["evaluation"] for e in self.events if e["__typename"] == "AssetCheckEvaluationEvent"]

    def failure(self) -> str:
        """The root cause of the first failed step, as one line."""
        for event in self.events:
            if event["__typename"] == "ExecutionStepFailureEvent" and event["error"]:
                chain = [event["error"], *(link["error"] for link in event["error"]["errorChain"])]
                root = chain[-1]
                message = root["message"].strip().splitlines()[0]
                # Dagster's message repeats the exception's qualified class name before its text.
                qualified, _, text = message.partition(": ")
                if text and qualified.split(".")[-1] == root["className"]:
                    message = text
                return f"{event['stepKey']}: {root['className']}: {message}"
        return f"run {self.status.lower()}"


def _metadata_value(entry: dict[str, Any]) -> Any:
    kind = entry["__typename"]
    if kind == "IntMetadataEntry":
        return entry["intValue"] if entry["intValue"] is not None else int(entry["intRepr"])
    if kind == "FloatMetadataEntry":
        return entry["floatValue"]
    if kind == "TextMetadataEntry":
        return entry["text"]
    if kind == "JsonMetadataEntry":
        return json.loads(entry["jsonString"])
    return None


class DagsterUI:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def graphql(self, query: str, variables: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        answer = httpx.post(f"{self.url}/graphql", timeout=timeout,
                            json={"query": query, "variables": variables}).json()
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
            "fromFailure": False}}, timeout=LAUNCH_TIMEOUT_S)["launchPartitionBackfill"])

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
        return self.launch_run(job, {"dagster/partition": partition,
                                     **{f"dagster/partition/{name}": key for name, key in dimensions.items()}})

    def launch_run(self, job: str, tags: dict[str, str], assets: Sequence[str] | None = None,
                   run_config: dict[str, Any] | None = None) -> str:
        """A run of ``job`` (of the named ``assets`` only, with their checks) with ``tags``, through the run
        queue, as the launchpad sends it; the run's id."""
        selector: dict[str, Any] = {"repositoryLocationName": CODE_LOCATION, "repositoryName": REPOSITORY,
                                    "jobName": job}
        if assets is not None:
            selector["assetSelection"] = [{"path": [asset]} for asset in assets]
        params: dict[str, Any] = {"selector": selector,
                                  "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}}
        if run_config is not None:
            params["runConfigData"] = run_config
        # The mutation answers once Dagster stored the run's planned events, one per partition and asset
        # (8,400 for a 1,400-partition run: 22 s on Postgres, 111 s on SQLite, measured).
        answer = self.graphql(LAUNCH_RUN, {"params": params}, timeout=LAUNCH_TIMEOUT_S)["launchRun"]
        if answer["__typename"] != "LaunchRunSuccess":
            raise DagsterUIError(f"the run of {job} was not launched: {answer}")
        return answer["run"]["runId"]

    def run(self, run_id: str) -> RunOutcome:
        """The run's status, times, tags, failed steps, outputs' metadata and check evaluations."""
        events: list[dict[str, Any]] = []
        after = None
        while True:
            answer = self.graphql(RUN_OUTCOME, {"id": run_id, "after": after})["runOrError"]
            if answer["__typename"] != "Run":
                raise DagsterUIError(f"run {run_id}: {answer}")
            connection = answer["eventConnection"]
            events += connection["events"]
            if not connection["hasMore"]:
                break
            after = connection["cursor"]
        return RunOutcome(answer, events)

    def runs(self, *, job: str | None = None, tags: dict[str, str] | None = None,
             created_after: float | None = None, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Runs (newest first) of ``job``, with ``tags``, created after a Unix time, in ``statuses``."""
        where: dict[str, Any] = {}
        if statuses:
            where["statuses"] = list(statuses)
        if job:
            where["pipelineName"] = job
        if tags:
            where["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        if created_after is not None:
            where["createdAfter"] = created_after
        answer = self.graphql(RUNS, {"filter": where})["runsOrError"]
        if answer["__typename"] != "Runs":
            raise DagsterUIError(f"runs: {answer}")
        return answer["results"]

    def cancel_unfinished(self, created_after: float, timeout: float = 60) -> None:
        """Every run created since ``created_after`` that is queued or under way, terminated as the run
        page's *Terminate* does, and waited for: a command that stops leaves no run behind it half done
        (a shift's run that never ends would hold the day's check back)."""
        for run in self.runs(created_after=created_after, statuses=UNFINISHED):
            with contextlib.suppress(DagsterUIError, httpx.HTTPError):
                self.graphql(TERMINATE_RUN, {"id": run["runId"]})
        deadline = time.monotonic() + timeout
        while self.runs(created_after=created_after, statuses=[*UNFINISHED, "CANCELING"]) \
                and time.monotonic() < deadline:
            time.sleep(0.5)

    def sensor(self, name: str, ticks: int = 5) -> dict[str, Any]:
        """The sensor's state: ``status``, ``typeSpecificData.lastCursor``, its newest ``ticks``."""
        answer = self.graphql(SENSOR, {"selector": self._sensor_selector(name), "limit": ticks})["sensorOrError"]
        if answer["__typename"] != "Sensor":
            raise DagsterUIError(f"sensor {name}: {answer}")
        return answer["sensorState"]

    def sensor_cursor(self, name: str) -> str | None:
        return (self.sensor(name, ticks=0)["typeSpecificData"] or {}).get("lastCursor")

    def wait_until_watching(self, name: str, timeout: float = 120) -> str:
        """The sensor's cursor, once its first tick set one (a first tick only starts watching)."""
        deadline = time.monotonic() + timeout
        while (cursor := self.sensor_cursor(name)) is None:
            if time.monotonic() > deadline:
                raise ConfigError(f"the daemon did not tick {name} within {timeout} s (is the daemon running?)")
            time.sleep(0.25)
        return cursor

    def start_sensor(self, name: str) -> None:
        """The sensor page's switch, turned on."""
        answer = self.graphql(SET_SENSOR, {"selector": self._sensor_selector(name)})["startSensor"]
        if answer["__typename"] != "Sensor":
            raise DagsterUIError(f"sensor {name} was not started: {answer}")

    def stop_sensor(self, name: str) -> None:
        """The sensor page's switch, turned off."""
        found = self.graphql(SENSOR_ID, {"selector": self._sensor_selector(name)})["sensorOrError"]
        if found["__typename"] != "Sensor":
            raise DagsterUIError(f"sensor {name}: {found}")
        answer = self.graphql(STOP_SENSOR, {"id": found["id"]})["stopSensor"]
        if answer["__typename"] != "StopSensorMutationResult":
            raise DagsterUIError(f"sensor {name} was not stopped: {answer}")

    def wait_for_tick(self, name: str, after: float, timeout: float = 120) -> dict[str, Any]:
        """The sensor's first finished tick that started after the Unix time ``after``: the daemon's
        evaluation that saw everything written before it."""
        deadline = time.monotonic() + timeout
        while True:
            finished = [t for t in self.sensor(name)["ticks"]
                        if t["timestamp"] > after and t["status"] in ("SUCCESS", "SKIPPED", "FAILURE")]
            if finished:
                return min(finished, key=lambda t: t["timestamp"])
            if time.monotonic() > deadline:
                raise DagsterUIError(f"the daemon did not tick sensor {name} within {timeout} s")
            time.sleep(0.25)

    def _sensor_selector(self, name: str) -> dict[str, str]:
        return {"repositoryLocationName": CODE_LOCATION, "repositoryName": REPOSITORY, "sensorName": name}

    def run_status(self, run_id: str) -> str:
        answer = self.graphql(RUN_STATUS, {"id": run_id})["runOrError"]
        if answer["__typename"] != "Run":
            raise DagsterUIError(f"run {run_id}: {answer}")
        return answer["status"]

    def wait_for_run(self, run_id: str, timeout: float = 300, watch: Callable[[], None] | None = None) -> str:
        """The run's final status; ``watch`` is called at each poll and may raise to stop waiting (a
        part the run needs is gone, so its outcome no longer matters)."""
        deadline = time.monotonic() + timeout
        while (status := self.run_status(run_id)) not in RUN_FINISHED:
            if watch is not None:
                watch()
            if time.monotonic() > deadline:
                raise DagsterUIError(f"run {run_id} did not finish within {timeout} s ({status})")
            time.sleep(0.25)
        return status


@contextlib.contextmanager
def running_dev(env: dict[str, str], log_path: Path, timeout: float = 180) -> Iterator[DagsterUI]:
    """``python -m rossmann_local.local.dev`` (what ``make dev`` runs) with ``env``, its output in
    ``log_path``; yields a client once the webserver answers, and stops it all on the way out."""
    port = free_port()
    command = [sys.executable, "-m", "rossmann_local.local.dev", "-h", "127.0.0.1", "-p", str(port)]
    with _serving(command, env, REPO_ROOT, port, log_path, timeout, signal.SIGTERM) as ui:
        yield ui  # dev stops dagster dev, the broker and itself on SIGTERM


@contextlib.contextmanager
def running_dagster_dev(env: dict[str, str], log_path: Path, timeout: float = 180,
                        port: int | None = None) -> Iterator[DagsterUI]:
    """``dagster dev`` (webserver, daemon and code server) on the repo's workspace with ``env`` (which
    names ``DAGSTER_HOME`` and the parts the code location uses), for a command that started those
    parts itself; its output in ``log_path``; on ``port`` (default: a free one). Stopped with SIGINT,
    as Ctrl-C stops it."""
    port = port or free_port()
    command = [sys.executable, "-W", "ignore:Function `dev_command` is superseded", "-m", "dagster", "dev",
               "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    # It runs in DAGSTER_HOME, so it does not take the repository's dagster.yaml (compose's instance) for its own.
    with _serving(command, env, Path(env["DAGSTER_HOME"]), port, log_path, timeout, signal.SIGINT,
                  die_with_parent) as ui:
        yield ui


@contextlib.contextmanager
def dagster_on(stack: LocalStack, log_name: str, port: int | None = None, **extra_env: str) -> Iterator[DagsterUI]:
    """``dagster dev`` on the local stack and the instance under the data dir (``DAGSTER_HOME`` if set),
    its log in the data dir as ``<log_name>.dagster.log``: the engine a command drives."""
    home = instance_home()
    started = engine_time()  # which runs are this command's
    with running_dagster_dev(stack.code_location_env(home, **extra_env), data_dir() / f"{log_name}.dagster.log",
                             port=port) as ui:
        try:
            yield ui
        except BaseException:
            with contextlib.suppress(DagsterUIError, httpx.HTTPError):
                ui.cancel_unfinished(started)  # stopped or failed: its runs do not outlive it
            raise


@contextlib.contextmanager
def _serving(command: list[str], env: dict[str, str], cwd: Path, port: int, log_path: Path, timeout: float,
             stop_signal: signal.Signals, preexec: Any = None) -> Iterator[DagsterUI]:
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=preexec)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise DagsterUIError(f"{' '.join(command[1:4])} exited with {process.returncode}:\n"
                                     f"{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise DagsterUIError(f"the webserver did not answer within {timeout} s:\n"
                                     f"{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield DagsterUI(url)
    finally:
        stop_process_group(process, stop_signal, timeout=90)  # and whatever of its group is left
