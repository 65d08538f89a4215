"""Small helpers the tests share: materialize a shop x shift partition, read a shop's rows."""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg
from sqlalchemy import select

from rossmann_local.defs import build_definitions
from rossmann_local.defs.partitions import partition_key, range_tags
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import World
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.models import Delivery, DeliveryItem, Product, Transaction, TransactionItem

ASSET_NAMES = ("synced_cache", "shift_deliveries", "shift_transactions")  # one step: sync, deliver, sell


def shift_of(world: World, day: date | None = None, index: int = 0) -> ShiftWindow:
    return shifts_of_day(world, day or world.start_date)[index]


def materialize_shift(world: World, shift: ShiftWindow, shop_id: int, resources: dict[str, Any],
                      assets: tuple[str, ...] = ASSET_NAMES, raise_on_error: bool = True,
                      instance: dg.DagsterInstance | None = None, last_shop: int | None = None,
                      checks: bool = True, last_shift: ShiftWindow | None = None) -> dg.ExecuteInProcessResult:
    """``dg.materialize`` the named assets (with their checks, unless ``checks`` is false) for one shop
    x shift partition, or with ``last_shop`` for the shops ``shop_id..last_shop`` of the shift (to
    ``last_shift``, if given) in one run (a single-run backfill)."""
    if set(assets) & set(ASSET_NAMES):  # the shift's step cannot be split: any of its assets runs all three
        assets = tuple(dict.fromkeys([*ASSET_NAMES, *assets]))
    resources = {"scenario_ledger": ScenarioLedger(), **resources}  # the stock step names the scenario
    defs = build_definitions(world, resources)
    keys = {dg.AssetKey(name) for name in assets}
    # the definitions that hold a wanted asset (a multi-asset holds several), run for those assets only
    holding = [a for a in defs.assets or () if set(a.keys) & keys]  # type: ignore[union-attr]
    wanted = dg.AssetSelection.assets(*assets) if checks else dg.AssetSelection.assets(*assets).without_checks()
    if last_shop is None:
        return dg.materialize(holding, selection=wanted, partition_key=str(partition_key(shift, shop_id)),
                              resources=resources, raise_on_error=raise_on_error, instance=instance)
    tags = range_tags(str(partition_key(shift, shop_id)), str(partition_key(last_shift or shift, last_shop)))
    return dg.materialize(holding, selection=wanted, tags=tags, resources=resources, raise_on_error=raise_on_error,
                          instance=instance)


def materializations(result: dg.ExecuteInProcessResult, asset: str) -> list[dg.AssetMaterialization]:
    """The run's materializations of one asset (by key: several assets may share a step)."""
    return [e.materialization for e in result.get_asset_materialization_events()
            if e.materialization.asset_key == dg.AssetKey(asset)]


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = materializations(result, asset)
    return {k: v.value for k, v in event.metadata.items()}


def step_error(result: dg.ExecuteInProcessResult) -> dg.SerializableErrorInfo:
    """The error of the run's one failed step as the user reads it: Dagster's wrappers (and the
    retry policy's ``RetryRequested…``) peeled off, the user code's own error kept with its causes."""
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    while error.cause is not None and error.cls_name.startswith(("Dagster", "RetryRequested")):
        error = error.cause
    return error


def receipts_of(shops: ShopDatabases, shop_id: int) -> list[tuple]:
    with shops.transaction(shop_id) as conn:
        heads = conn.execute(select(Transaction).order_by(Transaction.transaction_id)).all()
        lines = conn.execute(select(TransactionItem).order_by(TransactionItem.item_id)).all()
    return [tuple(r) for r in heads] + [tuple(r) for r in lines]


def deliveries_of(shops: ShopDatabases, shop_id: int) -> list[tuple]:
    with shops.transaction(shop_id) as conn:
        heads = conn.execute(select(Delivery).order_by(Delivery.delivery_id)).all()
        lines = conn.execute(select(DeliveryItem).order_by(DeliveryItem.delivery_id, DeliveryItem.product_id)).all()
    return [tuple(r) for r in heads] + [tuple(r) for r in lines]


def products_of(shops: ShopDatabases, shop_id: int) -> dict[int, Any]:
    with shops.transaction(shop_id) as conn:
        return {p.product_id: p for p in conn.execute(select(Product))}


def stock_and_ledger(shops: ShopDatabases, shop_id: int) -> tuple[dict[int, int], dict[int, int]]:
    """``products.stock_quantity`` (kept by each write's own change) and the whole ledger's sum:
    they must be equal."""
    with shops.transaction(shop_id) as conn:
        kept = {p.product_id: p.stock_quantity for p in conn.execute(select(Product)) if p.stock_quantity}
        return kept, ledger.ledger_stock(conn)

