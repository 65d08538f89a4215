"""Shift reports in ClickHouse on the real engine (chDB through clickhouse-connect), TZ=UTC."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import clickhouse_connect
import dagster as dg
import pytest
from sqlalchemy import select

from rossmann_local.domain.world import World
from rossmann_local.reports.analytics import naive_revenue_per_shop_per_day, revenue_per_shop_per_day
from rossmann_local.reports.schema import DELIVERY, DELIVERY_COLUMNS, TRANSACTIONS, TRANSACTIONS_COLUMNS
from rossmann_local.reports.writer import ReportRows, replace_shift_rows
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError
from rossmann_local.shop.expected_answers import expected_shops
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.models import DeliveryItem, ShiftReport, Transaction, TransactionItem
from rossmann_local.shop_db.report_rows import delivery_report_rows
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.helpers import ASSET_NAMES, materialize_shift, metadata, shift_of

REPORTS = ("transactions_report", "delivery_report")
REFERENCE_TRANSACTIONS = {
    "shop_id": "UInt32", "transaction_time": "DateTime('UTC')", "product_price": "Float64",
    "product_discount": "Float64", "unit_price": "Float64", "quantity": "UInt32", "transaction_amount": "Float64",
    "loyalty_discount": "Float64", "transaction_total_amount": "Float64", "country": "String", "city": "String",
    "terminal_id": "UInt32", "admin_id": "UInt32", "cashier_id": "UInt32", "transaction_id": "UInt64",
    "payment_method": "String", "product_id": "UInt32", "product_name": "String", "product_barcode": "String",
    "category_id": "UInt32", "category_name": "String", "discount_type": "String",
}
REFERENCE_DELIVERY = {
    "shop_id": "UInt32", "country": "String", "city": "String", "admin_id": "UInt32", "courier_id": "UInt32",
    "product_id": "UInt32", "product_name": "String", "category_id": "UInt32", "category_name": "String",
    "quantity": "UInt32", "accepted_time": "DateTime('UTC')",
}


def run(world: World, shops: ShopDatabases, api: SyncApiClient, clickhouse: ClickHouseReports, shop_id: int = 1,
        index: int = 0, assets: tuple[str, ...] = ASSET_NAMES + REPORTS,
        raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return materialize_shift(world, shift_of(world, index=index), shop_id,
                             {"shop_databases": shops, "sync_api": api, "clickhouse": clickhouse},
                             assets=assets, raise_on_error=raise_on_error)


def query(clickhouse: ClickHouseReports, sql: str, **parameters: Any) -> list[tuple]:
    with clickhouse.client() as client:
        return client.query(sql, parameters=parameters).result_rows


def count(clickhouse: ClickHouseReports, table: str) -> int:
    return query(clickhouse, f"SELECT count() FROM shop_reports.{table}")[0][0]


def reported_shifts(shops: ShopDatabases, shop_id: int) -> list[tuple]:
    with shops.transaction(shop_id) as conn:
        return [tuple(r) for r in conn.execute(select(ShiftReport.report, ShiftReport.rows))]


def test_schema_keeps_every_reference_column_by_name_and_type(world: World, sqlite_shops: ShopDatabases,
                                                              sync_api: SyncApiClient,
                                                              clickhouse: ClickHouseReports) -> None:
    run(world, sqlite_shops, sync_api, clickhouse)
    for table, reference, schema in ((TRANSACTIONS, REFERENCE_TRANSACTIONS, TRANSACTIONS_COLUMNS),
                                     (DELIVERY, REFERENCE_DELIVERY, DELIVERY_COLUMNS)):
        columns = dict(query(clickhouse, "SELECT name, type FROM system.columns WHERE database = 'shop_reports' "
                                         "AND table = {t:String}", t=table))
        assert columns == dict(schema)
        assert {name: columns[name] for name in reference} == reference
        engine = query(clickhouse, "SELECT engine, partition_key, sorting_key FROM system.tables "
                                   "WHERE database = 'shop_reports' AND name = {t:String}", t=table)
        assert engine[0][0] == "MergeTree" and engine[0][2].startswith("shop_id, shift_start")


def test_the_transactions_report_holds_the_shifts_lines_as_sold(world: World, shop_databases: ShopDatabases,
                                                                sync_api: SyncApiClient,
                                                                clickhouse: ClickHouseReports) -> None:
    result = run(world, shop_databases, sync_api, clickhouse, shop_id=4)
    shift = shift_of(world)
    with shop_databases.transaction(4) as conn:
        lines = {li.item_id: li for li in conn.execute(
            select(Transaction.transaction_time, Transaction.cashier_id, Transaction.terminal_id,
                   Transaction.total_amount, TransactionItem).join(TransactionItem))}
        local = ledger.shift_totals(conn, shift)
    rows = query(clickhouse, "SELECT * FROM shop_reports.transactions ORDER BY item_id")
    names = [name for name, _ in TRANSACTIONS_COLUMNS]
    assert len(rows) == len(lines) == local["lines"]
    for values in rows:
        row = dict(zip(names, values, strict=True))
        line = tx = lines[row["item_id"]]
        assert (row["shop_id"], row["country"], row["city"]) == (4, "Spain", "La Nucia")
        assert (row["admin_id"], row["cashier_id"], row["terminal_id"]) == (world.shop(4).admin_id, tx.cashier_id,
                                                                            tx.terminal_id)
        assert row["transaction_time"] == tx.transaction_time.replace(tzinfo=None), "UTC, as stored"
        assert (row["product_name"], row["product_barcode"], row["category_name"]) == (
            line.product_name, line.product_barcode, line.category_name)
        assert (Decimal(str(row["unit_price"])), Decimal(str(row["product_price"])), row["quantity"]) == (
            line.unit_price, line.product_price, line.quantity)
        assert Decimal(str(row["transaction_total_amount"])) == tx.total_amount
    meta = metadata(result, "transactions_report")
    assert (meta["rows"], meta["receipts"], meta["units"]) == (local["lines"], local["receipts"], local["units"])
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True, True, True]
    assert sorted(reported_shifts(shop_databases, 4)) == [(DELIVERY, _delivered(shop_databases, 4)),
                                                          (TRANSACTIONS, local["lines"])]


def _delivered(shops: ShopDatabases, shop_id: int) -> int:
    with shops.transaction(shop_id) as conn:
        return len(conn.execute(select(DeliveryItem)).all())


def test_the_delivery_report_holds_one_row_per_delivered_product(world: World, sqlite_shops: ShopDatabases,
                                                                 sync_api: SyncApiClient,
                                                                 clickhouse: ClickHouseReports) -> None:
    run(world, sqlite_shops, sync_api, clickhouse, shop_id=2, index=1)
    with sqlite_shops.transaction(2) as conn:
        delivered = {li.product_id: li.quantity for li in conn.execute(select(DeliveryItem))}
    rows = query(clickhouse, "SELECT product_id, quantity, courier_id, admin_id, city, toHour(accepted_time) "
                             "FROM shop_reports.delivery")
    assert {r[0]: r[1] for r in rows} == delivered and len(rows) == len(delivered)
    assert {r[2:] for r in rows} == {(1, world.shop(2).admin_id, "Nurnberg", 16)}, "18:00 Berlin is 16:00 UTC"


def test_rerunning_the_reports_leaves_exactly_one_copy(world: World, sqlite_shops: ShopDatabases,
                                                       sync_api: SyncApiClient,
                                                       clickhouse: ClickHouseReports) -> None:
    run(world, sqlite_shops, sync_api, clickhouse)
    first = (count(clickhouse, TRANSACTIONS), count(clickhouse, DELIVERY))
    for _ in range(2):
        run(world, sqlite_shops, sync_api, clickhouse, assets=REPORTS)
    run(world, sqlite_shops, sync_api, clickhouse)
    assert (count(clickhouse, TRANSACTIONS), count(clickhouse, DELIVERY)) == first
    assert first[0] > 0 and first[1] > 0


class ClientWrapper:
    """A ClickHouse client whose ``insert`` the subclass changes; everything else goes through."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class FailsAfterInsert(ClickHouseReports):
    """Killed between the ClickHouse insert and the local bookkeeping."""

    @contextmanager
    def client(self) -> Iterator[Any]:
        with super().client() as real:
            class Dies(ClientWrapper):
                def insert(self, *args: Any, **kwargs: Any) -> Any:
                    real.insert(*args, **kwargs)
                    raise ConnectionError("worker lost right after the insert")

            yield Dies(real)


@pytest.mark.faults
def test_a_failure_after_the_insert_then_a_rerun_leaves_one_copy(world: World, sqlite_shops: ShopDatabases,
                                                                 sync_api: SyncApiClient,
                                                                 clickhouse: ClickHouseReports) -> None:
    run(world, sqlite_shops, sync_api, clickhouse, assets=ASSET_NAMES)
    failing = FailsAfterInsert(dsn=clickhouse.dsn)
    result = run(world, sqlite_shops, sync_api, failing, assets=REPORTS, raise_on_error=False)
    assert not result.success
    lines = ledger_lines(sqlite_shops, world)
    assert count(clickhouse, TRANSACTIONS) == lines, "the insert happened"
    assert reported_shifts(sqlite_shops, 1) == [], "but nothing was recorded as reported"
    assert run(world, sqlite_shops, sync_api, clickhouse, assets=REPORTS).success
    assert count(clickhouse, TRANSACTIONS) == lines
    assert dict(reported_shifts(sqlite_shops, 1))[TRANSACTIONS] == lines


def ledger_lines(shops: ShopDatabases, world: World, shop_id: int = 1, index: int = 0) -> int:
    with shops.transaction(shop_id) as conn:
        return int(ledger.shift_totals(conn, shift_of(world, index=index))["lines"])


class CorruptsOneLine(ClickHouseReports):
    """Writes one unit too many on the first line of the transactions report: the numbers disagree."""

    @contextmanager
    def client(self) -> Iterator[Any]:
        with super().client() as real:
            class Corrupts(ClientWrapper):
                def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str],
                           **kwargs: Any) -> Any:
                    if table.endswith(f".{TRANSACTIONS}"):
                        quantity = list(column_names).index("quantity")
                        rows = [tuple(v + 1 if i == quantity else v for i, v in enumerate(rows[0])), *rows[1:]]
                    return real.insert(table, rows, column_names=column_names, **kwargs)

            yield Corrupts(real)


def test_the_reconciliation_fails_and_blocks_when_the_numbers_disagree(world: World, sqlite_shops: ShopDatabases,
                                                                       sync_api: SyncApiClient,
                                                                       clickhouse: ClickHouseReports) -> None:
    run(world, sqlite_shops, sync_api, clickhouse, assets=ASSET_NAMES)
    result = run(world, sqlite_shops, sync_api, CorruptsOneLine(dsn=clickhouse.dsn), assets=REPORTS,
                 raise_on_error=False)
    assert not result.success, "a failed blocking check fails the run"
    checks = {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()}
    assert not checks["transactions_report"].passed and checks["delivery_report"].passed
    assert checks["transactions_report"].description == "differs in units"
    assert TRANSACTIONS not in dict(reported_shifts(sqlite_shops, 1)), "an unreconciled report is not confirmed"


def test_sale_time_values_survive_a_later_price_change(world: World, sqlite_shops: ShopDatabases,
                                                       sync_api: SyncApiClient, clickhouse: ClickHouseReports,
                                                       store: CatalogueStore) -> None:
    run(world, sqlite_shops, sync_api, clickhouse)
    morning = query(clickhouse, "SELECT item_id, product_name, unit_price FROM shop_reports.transactions")
    evening_start = shift_of(world, index=1).start  # the changes take effect at the evening's start
    for product in world.products:
        store.update_product(product.product_id, name=f"{product.name} (new)", at=evening_start)
        store.set_price(product.product_id, "Berlin", Decimal("50.00"), Decimal("0"), at=evening_start)
    run(world, sqlite_shops, sync_api, clickhouse, index=1)
    run(world, sqlite_shops, sync_api, clickhouse, assets=REPORTS)  # the morning's report, sent again
    shift = shift_of(world)
    assert query(clickhouse, "SELECT item_id, product_name, unit_price FROM shop_reports.transactions "
                             "WHERE shift_start = {s:DateTime('UTC')}", s=shift.start) == morning
    evening = query(clickhouse, "SELECT DISTINCT unit_price FROM shop_reports.transactions "
                                "WHERE shift_start != {s:DateTime('UTC')}", s=shift.start)
    assert evening == [(50.0,)]


def test_a_report_holds_only_its_own_shift(world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient,
                                           clickhouse: ClickHouseReports) -> None:
    run(world, sqlite_shops, sync_api, clickhouse, assets=ASSET_NAMES)
    run(world, sqlite_shops, sync_api, clickhouse, index=1)
    assert count(clickhouse, TRANSACTIONS) == ledger_lines(sqlite_shops, world, index=1)
    codes = query(clickhouse, "SELECT DISTINCT intDiv(transaction_id, 100000) FROM shop_reports.transactions")
    assert codes == [(shift_of(world, index=1).code,)]


def test_revenue_per_shop_per_day_counts_each_receipt_once(world: World, sqlite_shops: ShopDatabases,
                                                           sync_api: SyncApiClient,
                                                           clickhouse: ClickHouseReports) -> None:
    for shop_id in (1, 4):
        for index in (0, 1):
            run(world, sqlite_shops, sync_api, clickhouse, shop_id=shop_id, index=index)
    day = world.start_date
    with clickhouse.client() as client:
        right = revenue_per_shop_per_day(client, world.timezone, day, day)
        naive = naive_revenue_per_shop_per_day(client, world.timezone, day, day)
    days_expected = {d.shop_id: d for s in expected_shops(world, [day], sync_api) for d in s.days}
    for row, wrong in zip(right, naive, strict=True):
        with sqlite_shops.transaction(row.shop_id) as conn:
            totals = [ledger.shift_totals(conn, shift_of(world, index=i)) for i in (0, 1)]
        assert row.day == day
        assert row.receipts == sum(t["receipts"] for t in totals)
        assert row.revenue == sum(t["revenue"] for t in totals)
        assert wrong.revenue > row.revenue, "summing per line over-counts receipts with several lines"
        expected = days_expected[row.shop_id]
        assert (expected.revenue, expected.revenue_summed_per_line) == (row.revenue, wrong.revenue), \
            "the expected answers carry both the right figure and the one the original dashboards read"
    assert [r.shop_id for r in right] == [1, 4]


@pytest.mark.parametrize(("dsn", "problem"), [
    ("chdb://relative/dir", "needs an absolute directory"),
    ("clickhouse://default@localhost", "is not a ClickHouse DSN"),
    ("http://", "is not a ClickHouse DSN"),
])
def test_a_bad_dsn_names_the_setting(dsn: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"ROSSMANN_CLICKHOUSE_DSN") as error, ClickHouseReports(dsn=dsn).client():
        pass
    assert problem in str(error.value)


def test_an_unreachable_server_names_the_setting_and_hides_the_password() -> None:
    reports = ClickHouseReports(dsn="http://default:s3cret@127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"ClickHouse at http://default:\*\*\*@127.0.0.1:9 is not reachable "
                                          r"\(check ROSSMANN_CLICKHOUSE_DSN\)") as error, reports.client():
        pass
    assert "s3cret" not in str(error.value)


def test_report_rows_are_bound_to_the_reports_columns_by_name(world: World, sqlite_shops: ShopDatabases,
                                                               sync_api: SyncApiClient,
                                                               clickhouse: ClickHouseReports) -> None:
    """Rows carry their column names: any order inserts right, a missing or unknown column is refused."""
    columns = tuple(name for name, _ in DELIVERY_COLUMNS)
    with pytest.raises(ValueError, match=r"missing \['shift_start'\], unknown \['shift'\]"):
        ReportRows(DELIVERY, (*columns[:-1], "shift"), [])
    run(world, sqlite_shops, sync_api, clickhouse, assets=ASSET_NAMES)
    shift = shift_of(world)
    with sqlite_shops.transaction(1) as conn:
        rows = delivery_report_rows(conn, shift, 1, "Germany", "Berlin")
    backwards = ReportRows(DELIVERY, rows.columns[::-1], [row[::-1] for row in rows.rows])
    with clickhouse.client() as client:
        replace_shift_rows(client, 1, shift.start, backwards)
    stored = query(clickhouse, f"SELECT {', '.join(rows.columns)} FROM shop_reports.delivery ORDER BY delivery_id, "
                               "product_id")
    # Times go as epoch seconds; chDB answers DateTime('UTC') as naive UTC.
    times = {name for name, kind in DELIVERY_COLUMNS if kind.startswith("DateTime")}
    naive_utc = [tuple(datetime.fromtimestamp(v, UTC).replace(tzinfo=None) if name in times else v
                       for name, v in zip(rows.columns, r, strict=True)) for r in rows.rows]
    assert [tuple(r) for r in stored] == naive_utc and stored
    assert naive_utc[0][rows.columns.index("shift_start")] == shift.start.astimezone(UTC).replace(tzinfo=None)


def test_an_expected_shop_day_table_of_the_first_release_is_upgraded_with_the_per_line_sum(
        clickhouse: ClickHouseReports) -> None:
    """A ClickHouse that holds expected_shop_day as release 0.1.0 made it (no per-line sum) gets the
    column when a report client opens it, keeping its rows, instead of stopping on a schema mismatch."""
    first_release = ("shop_id UInt32, day Date, receipts UInt32, lines UInt32, units_sold UInt32, "
                     "revenue Decimal(18, 2), units_delivered UInt32, closing_stock UInt32")
    raw = clickhouse_connect.get_client(dsn=clickhouse.resolved_dsn())
    try:
        raw.command("CREATE DATABASE IF NOT EXISTS shop_reports")
        raw.command(f"CREATE TABLE shop_reports.expected_shop_day ({first_release}) ENGINE = MergeTree "
                    "PARTITION BY toYYYYMM(day) ORDER BY (shop_id, day)")
        raw.command("INSERT INTO shop_reports.expected_shop_day VALUES (1, '2026-06-01', 3, 5, 9, 12.5, 40, 31)")
    finally:
        raw.close()
    with clickhouse.client() as client:
        rows = client.query("SELECT revenue, revenue_summed_per_line FROM shop_reports.expected_shop_day").result_rows
    assert rows == [(Decimal("12.50"), Decimal("0.00"))]
