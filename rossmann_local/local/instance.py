"""The Dagster instance of the no-service defaults, and the catalogue sensor's cursor where the
daemon keeps it.

The run queue's policy is written once, in the repository's ``dagster.yaml`` (the deployment's
instance): this instance takes its ``concurrency`` (runs and pools) from there and keeps its own storage
(SQLite under the data dir).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.remote_origin import RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.workspace.load_target import WorkspaceFileTarget

from rossmann_local.settings import ConfigError, data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_INSTANCE = REPO_ROOT / "dagster.yaml"
# The repo's workspace.yaml: the code location "rossmann_local", as make dev (and compose) name it.
WORKSPACE = REPO_ROOT / "workspace.yaml"


def concurrency_policy(part: str) -> dict[str, Any]:
    """``concurrency.<part>`` (``runs``: the run queue, ``pools``: the op pools) of the repository's
    dagster.yaml: the one place the policy is written."""
    try:
        return yaml.safe_load(DEPLOYMENT_INSTANCE.read_text())["concurrency"][part]
    except (OSError, KeyError, TypeError) as exc:
        raise ConfigError(f"the instance's concurrency is read from {DEPLOYMENT_INSTANCE} (concurrency.{part}), "
                          f"which is missing or has none: {exc}") from None


def run_queue_policy() -> dict[str, Any]:
    return concurrency_policy("runs")


def managed_instance_yaml() -> str:
    config = {
        "telemetry": {"enabled": False},  # no network here
        # Storage: Dagster's default SQLite storage under DAGSTER_HOME (an event-log file per run
        # beside the index), the one that holds the daemon's concurrent runs without "database is
        # locked". Measured beside a bulk subclass of Dagster's private SQLite storage (dropped: private
        # API) and the documented consolidated storage: make day 14.8 s against 11.6 s and 13.5 s.
        # Each step's stdout/stderr is not captured to files: capturing spawns a `tail` and a Python
        # watcher process per step (ours log through Dagster's event log, which the UI shows), and
        # those children took Ctrl-C with a traceback each.
        "compute_logs": {"module": "dagster.core.storage.noop_compute_log_manager",
                         "class": "NoOpComputeLogManager"},
        # The deployment's pools too: chDB's one process at a time is the ClickHouse resource's own
        # lock, held only while a report is written, so report steps of parallel runs read the shop
        # databases side by side (make backfill --workers).
        "concurrency": {"runs": run_queue_policy(), "pools": concurrency_policy("pools")},
    }
    return ("# Written by rossmann_local for the no-service default instance from the repository's\n"
            "# dagster.yaml (its run queue); edits are overwritten.\n" + yaml.safe_dump(config, sort_keys=False))


def managed_instance() -> dg.DagsterInstance:
    """The persistent instance under the data dir (SQLite storage), unless ``DAGSTER_HOME`` names one."""
    if not os.environ.get("DAGSTER_HOME"):
        home = data_dir() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        config, wanted = home / "dagster.yaml", managed_instance_yaml()
        if not config.exists() or config.read_text() != wanted:
            partial = config.with_suffix(".yaml.partial")
            partial.write_text(wanted)
            partial.replace(config)  # atomic: a crash leaves the old file or the new one, never half
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


class InstanceSensorCursor:
    """A sensor's cursor in the instance's instigator state, found by the sensor's selector (code
    location, repository, name) as the daemon finds it: a tick evaluated here and the daemon's
    next tick in ``make dev`` continue from the same offsets."""

    def __init__(self, instance: dg.DagsterInstance, sensor_name: str, workspace: Path = WORKSPACE) -> None:
        [location] = WorkspaceFileTarget(paths=[str(workspace)]).create_origins()
        self.instance = instance
        repository = RemoteRepositoryOrigin(code_location_origin=location, repository_name=SINGLETON_REPOSITORY_NAME)
        self.origin = RemoteInstigatorOrigin(repository_origin=repository, instigator_name=sensor_name)
        self.selector_id = self.origin.get_selector().get_id()

    def _state(self) -> InstigatorState | None:
        return next((s for s in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
                     if s.selector_id == self.selector_id), None)

    def read(self) -> str | None:
        state = self._state()
        data = state.instigator_data if state is not None else None
        return data.cursor if isinstance(data, SensorInstigatorData) else None

    def write(self, cursor: str) -> None:
        state = self._state()
        if state is None:
            # As the daemon records a sensor that runs by default (DECLARED_IN_CODE): switching it
            # off or on in the UI still works as for any sensor.
            self.instance.add_instigator_state(InstigatorState(
                self.origin, InstigatorType.SENSOR, InstigatorStatus.DECLARED_IN_CODE,
                SensorInstigatorData(cursor=cursor)))
            return
        data = state.instigator_data if isinstance(state.instigator_data, SensorInstigatorData) else None
        updated = data._replace(cursor=cursor) if data is not None else SensorInstigatorData(cursor=cursor)
        self.instance.update_instigator_state(state.with_data(updated))
