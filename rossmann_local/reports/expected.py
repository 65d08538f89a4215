"""Writing the expected answers (``expected_shop_day``, ``expected_catalogue``): a day's rows replace
whatever that day held, so materializing a day again never doubles it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from clickhouse_connect.driver.client import Client

from rossmann_local.reports.schema import DATABASE, EXPECTED_CATALOGUE, EXPECTED_SHOP_DAY, column_names

EXPECTED_TABLES = (EXPECTED_SHOP_DAY, EXPECTED_CATALOGUE)


def replace_expected_day(client: Client, table: str, day: date, rows: Sequence[tuple[Any, ...]]) -> None:
    """Make ``table`` hold exactly these rows (in its columns' order) for the day."""
    if table not in EXPECTED_TABLES:
        raise ValueError(f"{table} is not an expected-answers table")
    present = client.query(f"SELECT count() FROM {DATABASE}.{table} WHERE day = {{day:Date}}",
                           parameters={"day": day}).result_rows[0][0]
    if present:
        client.command(f"DELETE FROM {DATABASE}.{table} WHERE day = {{day:Date}}", parameters={"day": day})
    if rows:
        client.insert(f"{DATABASE}.{table}", list(rows), column_names=column_names(table))
