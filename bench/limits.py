"""What the parts could do with the same rows, measured beside an end-to-end run (``make bench-scale``):
the simulation alone (one core, and every core with the shops split over processes), the shop
databases' raw inserts (sqlite3 ``executemany``, one transaction per shop, into empty copies of the
tables) and ClickHouse's raw insert of the transactions report's rows (one INSERT into a twin table)."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.simulation import run as simulate
from rossmann_local.reports.schema import DATABASE, TRANSACTIONS
from rossmann_local.resources.clickhouse import ClickHouseReports

RECEIPT_TABLES = ("transactions", "transaction_items")


def _simulated_part(args: tuple[int, int, int, int]) -> tuple[int, float]:
    receipts, _lines, seconds, _digest = simulate(*args)
    return receipts, seconds


def simulation_alone(shops: int, days: int, processes: int) -> tuple[int, float]:
    """(receipts, seconds) of the simulation of every shop's shifts, the shops split over ``processes``
    side by side: the seconds are the slowest process's own (its start is not counted)."""
    if processes == 1:
        return _simulated_part((shops, days, 0, 1))
    with ProcessPoolExecutor(processes) as pool:
        parts = list(pool.map(_simulated_part, [(shops, days, k, processes) for k in range(processes)]))
    return sum(r for r, _ in parts), max(s for _, s in parts)


def sqlite_raw_inserts(shop_files: list[Path]) -> tuple[int, float]:
    """(rows, seconds) to insert every receipt and receipt line of these shop databases into empty
    copies of their tables, raw: ``executemany`` in one transaction per shop."""
    rows, seconds = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for path in shop_files:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as source:
                tables = {name: (sql, source.execute(f"SELECT * FROM {name}").fetchall())
                          for name, sql in source.execute(
                              "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
                              RECEIPT_TABLES)}
            target = sqlite3.connect(Path(tmp) / path.name)
            try:
                for sql, _ in tables.values():
                    target.execute(sql)
                started = time.perf_counter()
                with target:
                    for name, (_, values) in tables.items():
                        if values:
                            marks = ", ".join("?" * len(values[0]))
                            target.executemany(f"INSERT INTO {name} VALUES ({marks})", values)
                seconds += time.perf_counter() - started
            finally:
                target.close()
            rows += sum(len(values) for _, values in tables.values())
    return rows, seconds


def clickhouse_raw_insert(clickhouse: ClickHouseReports) -> tuple[int, float]:
    """(rows, seconds) of one raw INSERT of every transactions-report row into a twin table."""
    table = f"{DATABASE}.{TRANSACTIONS}"
    twin = f"{table}_raw_limit"
    with clickhouse.client() as client:
        client.command(f"DROP TABLE IF EXISTS {twin}")
        client.command(f"CREATE TABLE {twin} AS {table}")
        try:
            result = client.query(f"SELECT * FROM {table}")
            columns, values = list(result.column_names), result.result_rows
            started = time.perf_counter()
            client.insert(twin, values, column_names=columns)
            seconds = time.perf_counter() - started
        finally:
            client.command(f"DROP TABLE IF EXISTS {twin}")
    return len(values), seconds
