"""The no-service instance's event log: Dagster's consolidated SQLite storage, made fit for bulk runs.

Dagster's ``ConsolidatedSqliteEventLogStorage`` creates a new SQLAlchemy engine and connection for
every event and commits each with a full fsync; a run over many partitions stores several events
per partition (planned, materialized, metadata), so a 560-partition backfill spent about half its
time there. This storage keeps one engine per process, commits with ``synchronous=NORMAL`` (WAL:
durable across a crash of the process, may lose the last commits on a power cut, which a local
demo instance can afford), and stores a batch of events (``DAGSTER_EVENT_BATCH_SIZE``: a run's
planned events, a step's partitioned materializations) in one transaction. What it stores, and
where, is exactly what the base class stores: the same file, tables and indexes, readable by
``dagster dev`` and any other Dagster process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log import ConsolidatedSqliteEventLogStorage
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

# How many events Dagster hands over at once where it batches (it stores one by one when unset).
EVENT_BATCH_SIZE = "DAGSTER_EVENT_BATCH_SIZE"
DEFAULT_EVENT_BATCH_SIZE = "1000"
SQLITE_BUSY_TIMEOUT_SECONDS = 30


class BulkSqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data: Any = None) -> None:
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._batch = threading.local()
        self._schema: dict[tuple[str, str], bool] = {}
        super().__init__(base_dir, inst_data)

    def engine(self) -> Engine:
        """One engine per process (a forked child makes its own)."""
        if self._engine is None or self._engine_pid != os.getpid():
            engine = create_engine(self._conn_string, poolclass=NullPool,
                                   connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
            event.listen(engine, "connect", _synchronous_normal)
            self._engine, self._engine_pid = engine, os.getpid()
        return self._engine

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        batch = getattr(self._batch, "connection", None)
        if batch is not None:  # inside store_event_batch: the batch's one transaction
            yield batch
            return
        with self.engine().connect() as conn, conn.begin():
            yield conn

    # The base class asks the database schema on every event (a new engine for has_table, an
    # inspector for the asset key columns); a process sees the schema it started with. Only a
    # "yes" is kept, so a schema upgraded meanwhile is still noticed.
    def has_table(self, table_name: str) -> bool:
        if not self._schema.get(("table", table_name)):
            with self.engine().connect() as conn:
                self._schema[("table", table_name)] = bool(self.engine().dialect.has_table(conn, table_name))
        return self._schema[("table", table_name)]

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        if not self._schema.get(("asset_keys column", column_name)):
            self._schema[("asset_keys column", column_name)] = super()._has_asset_key_col_on_connection(
                conn, column_name)
        return self._schema[("asset_keys column", column_name)]

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """The events in one transaction, each stored as ``store_event`` stores it."""
        with self.engine().connect() as conn, conn.begin():
            self._batch.connection = conn
            try:
                for entry in events:
                    self.store_event(entry)
            finally:
                self._batch.connection = None


def _synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
