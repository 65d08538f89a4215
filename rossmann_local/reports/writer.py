"""Writing a shift's report: exactly one copy per shop x shift, its rows bound to columns by name.

A report replaces its shop x shift: a lightweight DELETE of that key, only when an earlier copy
exists (a DELETE costs a mutation even when it matches nothing), then one INSERT of the whole
shift (one block, atomic). See ``reports.schema`` for the alternatives and why they were rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from rossmann_local.reports.analytics import SHIFT_WHERE, ShiftKey, shift_range_parameters
from rossmann_local.reports.schema import DATABASE, column_names


@dataclass(frozen=True)
class ReportRows:
    """A shift's rows for one report table, each value in the position of its column's name."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def __post_init__(self) -> None:
        expected = column_names(self.table)
        if sorted(self.columns) != sorted(expected):
            missing, extra = set(expected) - set(self.columns), set(self.columns) - set(expected)
            raise ValueError(f"rows for {DATABASE}.{self.table} do not match its columns: "
                             f"missing {sorted(missing)}, unknown {sorted(extra)}")

    def __len__(self) -> int:
        return len(self.rows)


def shifts_present(client: Client, table: str, keys: Sequence[ShiftKey]) -> set[tuple[int, int]]:
    """Which of these shop x shifts the table holds rows of, as (shop_id, epoch seconds): one query."""
    if not keys:
        return set()
    rows = client.query(f"SELECT DISTINCT shop_id, toUnixTimestamp(shift_start) FROM {DATABASE}.{table} "
                        f"WHERE {SHIFT_WHERE}", parameters=shift_range_parameters(keys))
    return {(int(shop), int(epoch)) for shop, epoch in rows.result_rows}


def replace_shift_rows(client: Client, shop_id: int, shift_start: datetime, report: ReportRows) -> None:
    """Make the report hold exactly these rows for the shop x shift."""
    batch = ReportBatch(lambda: nullcontext(client))  # a batch of one shift: its DELETE if present, one INSERT
    batch.add(shop_id, shift_start, report)
    batch.flush()


# Rows per INSERT when a run writes many shifts: far below max_insert_block_size (1,048,576), so
# each INSERT is one block, and a shift's rows (one day, one month partition) land in one part.
ROWS_PER_INSERT = 200_000


class ReportBatch:
    """Many shop x shifts of one report table, written with as few INSERTs as fit: each shift's rows
    wait in the batch, and the batch goes once it holds ``ROWS_PER_INSERT`` rows (and at ``flush``):
    one look for which of its shifts ClickHouse holds already, their earlier copies deleted, then one
    INSERT. An INSERT per shift made a part per shift: ClickHouse's cost per part was most of the
    report steps' time. A client is opened (``open_client``) only to write a batch, so gathering the
    rows does not hold ClickHouse (chDB: one process at a time); the last batch may be written with
    a client the caller holds anyway (``flush(client)``), so a run of a few shifts opens ClickHouse
    once. Memory stays bounded by the batch, however many shifts a run has."""

    def __init__(self, open_client: Callable[[], AbstractContextManager[Client]],
                 rows_per_insert: int = ROWS_PER_INSERT) -> None:
        self.open_client, self.rows_per_insert = open_client, rows_per_insert
        self.table: str | None = None
        self.columns: tuple[str, ...] = ()
        self.rows: list[tuple[Any, ...]] = []
        self.shifts: list[ShiftKey] = []  # (shop, shift start) of the rows waiting

    def add(self, shop_id: int, shift_start: datetime, report: ReportRows) -> None:
        if self.table is not None and (report.table, report.columns) != (self.table, self.columns):
            self.flush()
        self.table, self.columns = report.table, report.columns
        self.shifts.append((shop_id, shift_start))
        self.rows.extend(report.rows)
        if len(self.rows) >= self.rows_per_insert:
            self.flush()

    def flush(self, client: Client | None = None) -> None:
        """Write what waits, with ``client`` if given, else with one opened for it."""
        if self.table is not None and self.shifts:
            with nullcontext(client) if client is not None else self.open_client() as held:
                self._write(held, self.table)
        self.rows, self.shifts = [], []

    def _write(self, client: Client, table: str) -> None:
        present = shifts_present(client, table, self.shifts)
        for shop_id, shift_start in self.shifts:
            if (shop_id, int(shift_start.timestamp())) in present:
                client.command(f"DELETE FROM {DATABASE}.{table} WHERE shop_id = {{shop_id:UInt32}} "
                               "AND shift_start = {shift_start:DateTime('UTC')}",
                               parameters={"shop_id": shop_id, "shift_start": shift_start})
        if self.rows:
            client.insert(f"{DATABASE}.{table}", self.rows, column_names=list(self.columns))
