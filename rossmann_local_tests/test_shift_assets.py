"""Deliveries and terminal sales per shop x shift, materialized on real SQLite and real Postgres."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from rossmann_local.defs import build_definitions
from rossmann_local.defs import metadata as metadata_module
from rossmann_local.defs.partitions import partition_key
from rossmann_local.domain.shifts import inflation_factor, round_money
from rossmann_local.domain.world import World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.models import Delivery, DeliveryItem, Shift, Transaction, TransactionItem
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.helpers import (
    ASSET_NAMES,
    materializations,
    materialize_shift,
    metadata,
    products_of,
    receipts_of,
    shift_of,
)
from rossmann_local_tests.in_process import first_failure


def run_shift(world: World, shops: ShopDatabases, api: SyncApiClient, shop_id: int = 1, index: int = 0,
              day_offset: int = 0) -> dg.ExecuteInProcessResult:
    shift = shift_of(world, world.start_date + timedelta(days=day_offset), index)
    return materialize_shift(world, shift, shop_id, {"shop_databases": shops, "sync_api": api})


def test_a_shift_records_deliveries_and_receipts_with_useful_metadata(
        world: World, shop_databases: ShopDatabases, sync_api: SyncApiClient) -> None:
    result = run_shift(world, shop_databases, sync_api, shop_id=2)
    assert result.success
    deliveries, sales = metadata(result, "shift_deliveries"), metadata(result, "shift_transactions")
    assert deliveries["deliveries"] == 1 and deliveries["accepted_at"] == "10:00"
    assert 200 * 7 <= deliveries["units_delivered"] <= 490 * 14
    assert sales["receipts"] > 100 and sales["receipt_lines"] >= sales["receipts"]
    assert sales["revenue"] > 0 and sales["customers_turned_away"] > 0, "nothing is on the shelf before 10:00"
    per_terminal = sales["per_terminal"].records
    assert [r.data["terminal_id"] for r in per_terminal] == [4, 5, 6]
    assert sum(r.data["receipts"] for r in per_terminal) == sales["receipts"]
    plot = sales["revenue_by_hour"].splitlines()
    hours = [row.split("|")[1].strip() for row in plot[2:]]
    assert hours[0] == "10:00" and hours[-1] == "14:00", "first sales after the 10:00 delivery, shift ends 15:00"
    assert sum(int(row.split("|")[2]) for row in plot[2:]) == sales["receipts"]
    assert max(row.count("█") for row in plot[2:]) == 30
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.check_name == "stock_never_negative"

    shift = shift_of(world)
    with shop_databases.transaction(2) as conn:
        stored = ledger.shift_totals(conn, shift)
        first_receipt = conn.scalar(select(func.min(Transaction.transaction_time)))
        bookkeeping = conn.execute(select(Shift)).one()
        ids = conn.scalars(select(Transaction.transaction_id)).all()
        cashiers = set(conn.scalars(select(Transaction.cashier_id)))
    assert stored == {"receipts": sales["receipts"], "lines": sales["receipt_lines"], "units": sales["units_sold"],
                      "revenue": Decimal(str(sales["revenue"]))}
    assert first_receipt >= shift.at(world.sales.delivery_times[0]), "no sale before the first delivery"
    assert (bookkeeping.receipts, bookkeeping.revenue) == (sales["receipts"], Decimal(str(sales["revenue"])))
    assert all(str(i).startswith(str(shift.code)) for i in ids), "ids carry the shift code"
    assert cashiers == set(world.shop(2).cashier_ids)


def test_receipts_follow_the_domain_rules(world: World, shop_databases: ShopDatabases,
                                          sync_api: SyncApiClient) -> None:
    run_shift(world, shop_databases, sync_api, shop_id=4, day_offset=20)
    day = world.start_date + timedelta(days=20)
    inflation = inflation_factor(world, day)
    assert inflation == Decimal("1.05")
    catalogue = {p.product_id: p.prices["La Nucia"] for p in world.products}
    with shop_databases.transaction(4) as conn:
        receipts = conn.execute(select(Transaction)).all()
        lines = conn.execute(select(TransactionItem)).all()
    by_receipt: dict[int, list] = {}
    for line in lines:
        by_receipt.setdefault(line.transaction_id, []).append(line)
        price = catalogue[line.product_id]
        assert line.unit_price == round_money(price.price * inflation * (1 - price.discount))
        assert line.product_price == round_money(price.price * inflation)
        assert 1 <= line.quantity <= 5
    for receipt in receipts:
        items = by_receipt[receipt.transaction_id]
        assert 1 <= len(items) <= 8 and len({i.product_id for i in items}) == len(items)
        assert receipt.amount == round_money(sum(i.unit_price * i.quantity for i in items))
        assert receipt.total_amount == round_money(receipt.amount * (1 - receipt.loyalty_discount))
        assert receipt.loyalty_discount in {Decimal(v) for v in ("0", "0.05", "0.1", "0.2", "0.3")}
        assert receipt.payment_method in {"Cash", "Credit Card", "Debit Card"}
        assert receipt.discount_type == "percentage"
    loyalty = [r.loyalty_discount for r in receipts]
    assert loyalty.count(Decimal("0")) > len(loyalty) / 3, "no loyalty discount is the most frequent case"


def test_a_rerun_replaces_the_shift_with_the_same_receipts(world: World, shop_databases: ShopDatabases,
                                                           sync_api: SyncApiClient) -> None:
    run_shift(world, shop_databases, sync_api, shop_id=3)
    first = receipts_of(shop_databases, 3)
    stock = {pid: p.stock_quantity for pid, p in products_of(shop_databases, 3).items()}
    run_shift(world, shop_databases, sync_api, shop_id=3)
    assert receipts_of(shop_databases, 3) == first
    assert {pid: p.stock_quantity for pid, p in products_of(shop_databases, 3).items()} == stock
    with shop_databases.transaction(3) as conn:
        assert conn.scalar(select(func.count()).select_from(Delivery)) == 1
        assert conn.scalar(select(func.count()).select_from(Shift)) == 1


def test_rerunning_an_earlier_shift_after_later_ones_reproduces_it(
        world: World, shop_databases: ShopDatabases, sync_api: SyncApiClient) -> None:
    run_shift(world, shop_databases, sync_api, index=0)
    morning = receipts_of(shop_databases, 1)
    run_shift(world, shop_databases, sync_api, index=1)
    run_shift(world, shop_databases, sync_api, index=0, day_offset=1)
    stock_before = {pid: p.stock_quantity for pid, p in products_of(shop_databases, 1).items()}
    run_shift(world, shop_databases, sync_api, index=0)
    morning_again = [r for r in receipts_of(shop_databases, 1) if r in set(morning)]
    assert morning_again == morning, "the opening stock of a shift comes from the ledger, not from today's shelf"
    assert {pid: p.stock_quantity for pid, p in products_of(shop_databases, 1).items()} == stock_before


def test_the_same_partition_gives_the_same_receipts_in_another_database(
        tmp_path: Path, world: World, sync_api: SyncApiClient) -> None:
    first, second = (ShopDatabases(sqlite_dir=str(tmp_path / name)) for name in ("a", "b"))
    for shops in (first, second):
        run_shift(world, shops, sync_api, shop_id=5)
        run_shift(world, shops, sync_api, shop_id=5, index=1)
    assert receipts_of(first, 5) == receipts_of(second, 5)
    run_shift(world, first, sync_api, shop_id=4)
    assert receipts_of(first, 4) != receipts_of(first, 5), "another shop has other customers"
    first.dispose()
    second.dispose()


def test_stock_is_the_ledger_and_never_negative_over_several_days(
        world: World, shop_databases: ShopDatabases, sync_api: SyncApiClient) -> None:
    for day in range(3):
        for index in range(2):
            assert run_shift(world, shop_databases, sync_api, shop_id=5, index=index, day_offset=day).success
    with shop_databases.transaction(5) as conn:
        delivered = dict(conn.execute(select(DeliveryItem.product_id, func.sum(DeliveryItem.quantity))
                                      .group_by(DeliveryItem.product_id)).all())
        sold = dict(conn.execute(select(TransactionItem.product_id, func.sum(TransactionItem.quantity))
                                 .group_by(TransactionItem.product_id)).all())
        assert ledger.negative_stock(conn) == {}
    for pid, product in products_of(shop_databases, 5).items():
        assert product.stock_quantity == delivered.get(pid, 0) - sold.get(pid, 0) >= 0


def test_receipt_lines_keep_sale_time_names_and_prices_after_the_catalogue_changes(
        world: World, shop_databases: ShopDatabases, sync_api: SyncApiClient, store: CatalogueStore) -> None:
    run_shift(world, shop_databases, sync_api, shop_id=1)
    morning = receipts_of(shop_databases, 1)
    with shop_databases.transaction(1) as conn:
        sold = set(conn.scalars(select(TransactionItem.product_id)))
    evening_start = shift_of(world, index=1).start  # the changes take effect at the evening's start
    for pid in sold:
        store.update_product(pid, name=f"product {pid} v2", at=evening_start)
        store.set_price(pid, "Berlin", Decimal("99.00"), Decimal("0"), at=evening_start)
    run_shift(world, shop_databases, sync_api, shop_id=1, index=1)
    assert set(morning) <= set(receipts_of(shop_databases, 1)), "morning rows are untouched"
    evening = shift_of(world, index=1)
    with shop_databases.transaction(1) as conn:
        lines = conn.execute(select(TransactionItem).join(Transaction).where(
            Transaction.shift_start == evening.start, TransactionItem.product_id.in_(sold))).all()
    assert lines, "the evening sold some of the changed products"
    assert all(li.product_name == f"product {li.product_id} v2" and li.unit_price == Decimal("99.00")
               for li in lines)


@pytest.mark.postgres
def test_postgres_and_sqlite_store_exactly_the_same_shift(world: World, sqlite_shops: ShopDatabases,
                                                          postgres_shops: ShopDatabases,
                                                          sync_api: SyncApiClient) -> None:
    """Postgres takes receipts by COPY, SQLite by INSERT: both must hold the same values and UTC times."""
    for shops in (sqlite_shops, postgres_shops):
        run_shift(world, shops, sync_api, shop_id=2)
    on_postgres = receipts_of(postgres_shops, 2)
    assert on_postgres == receipts_of(sqlite_shops, 2)
    with postgres_shops.transaction(2) as conn:
        first = conn.scalar(select(func.min(Transaction.transaction_time)))
        raw_first = conn.exec_driver_sql("SELECT min(transaction_time)::text FROM transactions").scalar()
    assert first.utcoffset() == timedelta(0)
    assert raw_first == first.strftime("%Y-%m-%d %H:%M:%S"), "stored as naive UTC, like an INSERT would"


def test_each_partition_of_a_many_shop_run_carries_its_own_shops_figures(
        world: World, shop_databases: ShopDatabases, sync_api: SyncApiClient) -> None:
    """A single-run backfill over several shops makes one materialization per partition: each must
    show that shop x shift's own receipts, table and chart, not the run's totals."""
    shift = shift_of(world)
    result = materialize_shift(world, shift, 1, {"shop_databases": shop_databases, "sync_api": sync_api},
                               last_shop=3)
    assert result.success
    events = {e.partition: {k: v.value for k, v in e.metadata.items()}
              for e in materializations(result, "shift_transactions")}
    assert sorted(events) == [f"{shift.start:%Y-%m-%d-%H:%M}|{shop}" for shop in (1, 2, 3)]
    receipts = set()
    for key, figures in events.items():
        shop_id = int(key.split("|")[1])
        with shop_databases.transaction(shop_id) as conn:
            own = ledger.shift_totals(conn, shift)
        assert (figures["receipts"], Decimal(str(figures["revenue"]))) == (own["receipts"], own["revenue"]), key
        assert sum(r.data["receipts"] for r in figures["per_terminal"].records) == own["receipts"]
        assert {r.data["terminal_id"] for r in figures["per_terminal"].records} == \
            {3 * (shop_id - 1) + t for t in (1, 2, 3)}, "that shop's own terminals"
        assert figures["partitions_in_run"] == 3
        receipts.add(figures["receipts"])
    assert len(receipts) == 3, "three shops, three different shifts"
    assert len(materializations(result, "shift_deliveries")) == 3
    caches = {e.partition: e.metadata for e in materializations(result, "synced_cache")}
    assert all("products_received" in m for m in caches.values()), "each shop's first shift of the run syncs"


def test_the_shift_is_one_step_that_cannot_be_split(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient) -> None:
    """Sync, deliveries, sales and the stock check are one step: a selection of a part of it (the
    deliveries without the sales, the sales without their check) is refused before anything runs, so
    the daemon can never take a shift's delivery apart from the sales it depends on."""
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api}
    [step] = [a for a in build_definitions(world, resources).assets or () if "synced_cache" in {
        k.to_user_string() for k in a.keys}]  # type: ignore[union-attr]
    key = str(partition_key(shift_of(world), 1))
    for part in (dg.AssetSelection.assets(*ASSET_NAMES).without_checks(),
                 dg.AssetSelection.assets("synced_cache", "shift_deliveries")):
        with pytest.raises(dg.DagsterInvalidDefinitionError) as refused:
            dg.materialize([step], selection=part, partition_key=key, resources=resources)
        assert "does not support subsetting" in str(refused.value.__cause__)
    with sqlite_shops.transaction(1) as conn:
        assert ledger.shift_progress(conn, shift_of(world)) == (False, False)


def test_a_run_over_more_partitions_than_the_per_partition_limit_tables_every_partitions_figures(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """make backfill's big ranged runs: one observation per asset and run with a table of every
    partition's figures, every row with every column even where a partition lacks a figure (a shop's
    second shift of a run reuses its first one's sync), and not copied onto each materialization."""
    monkeypatch.setattr(metadata_module, "PER_PARTITION_LIMIT", 1)
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api}
    result = materialize_shift(world, shift_of(world), 1, resources, last_shop=5, last_shift=shift_of(world, index=1))
    synced = materializations(result, "synced_cache")
    [observed] = [e.asset_observation_data.asset_observation for e in result.get_asset_observation_events()
                  if e.asset_key == dg.AssetKey("synced_cache")]
    table = observed.metadata["figures_per_partition"]
    assert len(synced) == len(table.records) == 10
    assert {r.data["partition"] for r in table.records} == {m.partition for m in synced}
    assert len({frozenset(r.data) for r in table.records}) == 1, "every row has the same fields"
    assert all("figures_per_partition" not in m.metadata for m in synced)


def test_a_shift_before_its_previous_one_is_refused_in_the_worlds_local_time(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient) -> None:
    """The refusal names the shifts as the partitions do (local time), labelled with the world's zone."""
    assert run_shift(world, sqlite_shops, sync_api, index=0).success
    shift = shift_of(world, world.start_date + timedelta(days=1), 0)
    result = materialize_shift(world, shift, 1, {"shop_databases": sqlite_shops, "sync_api": sync_api},
                               raise_on_error=False)
    assert not result.success
    message = first_failure(result)
    assert "shift 2026-06-02 09:00 (Europe/Berlin)" in message and "previous shift, 2026-06-01 15:00," in message
    assert "UTC" not in message
