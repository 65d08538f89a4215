"""The Dagster instance of the no-service defaults: its home under the data dir.

The run queue's policy is written once, in the repository's ``dagster.yaml`` (the deployment's
instance): this instance takes its ``concurrency`` (runs and pools), run coordinator and sensor daemon
settings from there and keeps its own storage (SQLite under the data dir).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from rossmann_local.settings import DAGSTER_PG_URL, ConfigError, data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_INSTANCE = REPO_ROOT / "dagster.yaml"
# The repo's workspace.yaml: the code location "rossmann_local", as make dev (and compose) name it.
WORKSPACE = REPO_ROOT / "workspace.yaml"


def deployment_setting(*path: str) -> Any:
    """A setting of the repository's dagster.yaml (the deployment's instance), e.g.
    ``("concurrency", "runs")``: the one place the run queue and daemon policy is written."""
    try:
        value: Any = yaml.safe_load(DEPLOYMENT_INSTANCE.read_text())
        for key in path:
            value = value[key]
        return value
    except (OSError, KeyError, TypeError) as exc:
        raise ConfigError(f"the instance's {'.'.join(path)} is read from {DEPLOYMENT_INSTANCE}, "
                          f"which is missing or has none: {exc}") from None


def concurrency_policy(part: str) -> dict[str, Any]:
    """``concurrency.<part>`` (``runs``: the run queue, ``pools``: the op pools)."""
    return deployment_setting("concurrency", part)


def run_queue_policy() -> dict[str, Any]:
    return concurrency_policy("runs")


def postgres_storage() -> dict[str, Any] | None:
    """dagster-postgres storage on the database ``ROSSMANN_DAGSTER_PG_URL`` names (checked to answer),
    or None: Dagster's default SQLite storage under DAGSTER_HOME. For an instance several users or
    machines share, not for speed: the launch of a 1,400-partition run stored its planned events in
    22 s on Postgres against 111 s on SQLite, but the run's events cost 38.6 against 20.9 ms per
    partition and the whole 100-shop backfill took 406 s against 207 s (docs/benchmarks.md)."""
    raw = os.environ.get(DAGSTER_PG_URL, "").strip()
    if not raw:
        return None
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(f"{DAGSTER_PG_URL} is not a database URL: {raw!r}") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"{DAGSTER_PG_URL} must name a Postgres database (postgresql://...), not "
                          f"{url.get_backend_name()}")
    url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        raise ConfigError(f"{DAGSTER_PG_URL}: the Dagster instance's database "
                          f"{url.render_as_string(hide_password=True)} does not answer: "
                          f"{str(exc.orig).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    # dagster-postgres speaks psycopg2 (its own dependency), the plain postgresql:// scheme.
    return {"postgres": {"postgres_url": url.set(drivername="postgresql").render_as_string(hide_password=False)}}


def managed_instance_yaml() -> str:
    config: dict[str, Any] = {
        "telemetry": {"enabled": False},  # no network here
        # Storage: Dagster's default SQLite storage under DAGSTER_HOME (an event-log file per run
        # beside the index), the one that holds the daemon's concurrent runs without "database is
        # locked"; dagster-postgres when ROSSMANN_DAGSTER_PG_URL names a database (postgres_storage).
        # Measured beside a bulk subclass of Dagster's private SQLite storage (dropped: private API)
        # and the documented consolidated storage: make day 14.8 s against 11.6 s and 13.5 s.
        # Each step's stdout/stderr is not captured to files: capturing spawns a `tail` and a Python
        # watcher process per step (ours log through Dagster's event log, which the UI shows), and
        # those children took Ctrl-C with a traceback each.
        "compute_logs": {"module": "dagster.core.storage.noop_compute_log_manager",
                         "class": "NoOpComputeLogManager"},
        # The deployment's pools too: chDB's one process at a time is the ClickHouse resource's own
        # lock, held only while a report is written, so report steps of parallel runs read the shop
        # databases side by side (make backfill --workers).
        "concurrency": {"runs": run_queue_policy(), "pools": concurrency_policy("pools")},
        # The deployment's daemon pace: the queue dequeued every second, sensors evaluated in threads.
        "run_coordinator": deployment_setting("run_coordinator"),
        "sensors": deployment_setting("sensors"),
    }
    if (storage := postgres_storage()) is not None:
        config["storage"] = storage
    return ("# Written by rossmann_local for the no-service default instance from the repository's\n"
            "# dagster.yaml (its run queue); edits are overwritten.\n" + yaml.safe_dump(config, sort_keys=False))


_HOME_SET_HERE: list[str] = []  # the DAGSTER_HOME instance_home() put into this process's environment


def instance_home() -> Path:
    """``DAGSTER_HOME``: the persistent instance under the data dir (SQLite storage, its dagster.yaml
    written here), unless the environment names one. Set in this process's environment; one it set
    for an earlier data dir follows ``ROSSMANN_DATA_DIR`` (a second command in the same process, a
    test or a notebook, gets its own data dir's instance, not the first one's)."""
    named = os.environ.get("DAGSTER_HOME")
    if not named or named in _HOME_SET_HERE:
        home = data_dir() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        config, wanted = home / "dagster.yaml", managed_instance_yaml()
        if not config.exists() or config.read_text() != wanted:
            partial = config.with_suffix(".yaml.partial")
            partial.write_text(wanted)
            partial.replace(config)  # atomic: a crash leaves the old file or the new one, never half
        os.environ["DAGSTER_HOME"] = str(home.resolve())
        _HOME_SET_HERE.append(os.environ["DAGSTER_HOME"])
    return Path(os.environ["DAGSTER_HOME"])


def managed_instance() -> dg.DagsterInstance:
    """The instance of ``instance_home()``, opened in this process (the tests', the benchmarks')."""
    instance_home()
    return dg.DagsterInstance.get()
