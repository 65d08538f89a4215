"""The shop's assets per shop x shift: the synced cache, the shift's deliveries and its transactions."""

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from rossmann_local.defs.partitions import PREVIOUS_SHIFT, SINGLE_RUN_BACKFILL, combined_metadata, shifts_in_order
from rossmann_local.domain.catalogue import BEGINNING_OF_TIME
from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.simulation import ShiftSales, plan_deliveries, simulate_terminal_sales
from rossmann_local.domain.world import Shop, World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.cache import (
    advance_sync_watermark,
    sync_watermark,
    upsert_categories,
    upsert_products,
)

SHOP_GROUP = "shop"
# A Sync API that is down, answers 5xx, too slowly or with garbage gets two more tries, 1 s then 2 s
# later; then the run fails with the client's message. A 4xx or a wrong setting fails at once.
# Nothing is written before both answers validate.
SYNC_RETRIES = dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL)


def terminal_table(sales: ShiftSales) -> dg.TableMetadataValue:
    """Receipts and revenue per terminal, as a table the UI renders."""
    receipts: Counter[int] = Counter()
    revenue: dict[int, Decimal] = {}
    for r in sales.receipts:
        receipts[r.terminal_id] += 1
        revenue[r.terminal_id] = revenue.get(r.terminal_id, Decimal("0")) + r.total_amount
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"terminal_id": t, "receipts": receipts[t], "revenue": float(revenue[t])})
                 for t in sorted(receipts)],
        schema=dg.TableSchema(columns=[dg.TableColumn("terminal_id", "int"), dg.TableColumn("receipts", "int"),
                                       dg.TableColumn("revenue", "float")]),
    )


def revenue_by_hour_plot(sales: ShiftSales, timezone: str, width: int = 30) -> dg.MarkdownMetadataValue:
    """Revenue per hour of the shift as a Markdown bar chart, in the shop's local time: the shape
    of the shift (rush hours, quiet hours) at a glance in the UI."""
    zone = ZoneInfo(timezone)
    receipts: Counter[int] = Counter()
    revenue: dict[int, Decimal] = {}
    for r in sales.receipts:
        hour = r.transaction_time.astimezone(zone).hour
        receipts[hour] += 1
        revenue[hour] = revenue.get(hour, Decimal("0")) + r.total_amount
    if not revenue:
        return dg.MetadataValue.md("No receipts in this shift.")
    top = max(revenue.values())
    rows = ["| hour | receipts | revenue EUR | |", "|---|---:|---:|---|"]
    for hour in sorted(revenue):
        bar = "█" * max(1, round(width * revenue[hour] / top)) if top else ""
        rows.append(f"| {hour:02d}:00 | {receipts[hour]} | {revenue[hour]:,.2f} | `{bar}` |")
    return dg.MetadataValue.md("\n".join(rows))


def build_shop_assets(world: World, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    def sync_cache(shop: Shop, shop_databases: ShopDatabases, sync_api: SyncApiClient) -> dict[str, Any]:
        with shop_databases.transaction(shop.shop_id) as conn:
            categories_since = sync_watermark(conn, "categories") or BEGINNING_OF_TIME
            products_since = sync_watermark(conn, "products") or BEGINNING_OF_TIME
        categories = sync_api.categories_since(categories_since)
        products = sync_api.products_since(shop.shop_id, products_since)
        now = datetime.now(UTC)
        with shop_databases.transaction(shop.shop_id) as conn:
            category_counts = upsert_categories(conn, categories)
            product_counts = upsert_products(conn, products)
            for entity, records in (("categories", categories), ("products", products)):
                if records:
                    advance_sync_watermark(conn, entity, max(r.updated_at_utc for r in records), now)
            on_shelf = len(ledger.shelf(conn))
        return {
            "categories_received": category_counts.received,
            "categories_applied": category_counts.applied,
            "products_received": product_counts.received,
            "products_applied": product_counts.applied,
            "stale_rows_skipped": category_counts.stale + product_counts.stale,
            "placeholder_categories": product_counts.placeholders,
            "products_on_shelf": on_shelf,
            "synced_since": dg.MetadataValue.text(products_since.isoformat()),
        }

    @dg.asset(partitions_def=partitions, group_name=SHOP_GROUP, kinds={"sqlalchemy"},
              backfill_policy=SINGLE_RUN_BACKFILL, retry_policy=SYNC_RETRIES)
    def synced_cache(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                     sync_api: SyncApiClient) -> dg.MaterializeResult:
        """The shop's catalogue cache at shift start: categories, and products with its city's prices,
        pulled from the Sync API since the shop's last sync. Both answers are fetched and validated
        before anything is written, so a failing Sync API leaves the cache as it was."""
        # A run over many shifts syncs each shop once: every sync happens before any sale of the
        # run, so syncing a shop again for its later shifts would fetch nothing new.
        shops = {shop.shop_id: shop for shop, _ in shifts_in_order(world, context.partition_keys)}
        try:
            return dg.MaterializeResult(metadata=combined_metadata([
                sync_cache(shop, shop_databases, sync_api) for shop in shops.values()]))
        except ConfigError as exc:  # a wrong setting is not retried: it fails at once, naming the setting
            raise dg.Failure(description=str(exc), allow_retries=False) from None

    def take_deliveries(shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases) -> dict[str, Any]:
        with shop_databases.transaction(shop.shop_id) as conn:
            deliveries = plan_deliveries(world, shop, shift, ledger.shelf(conn))
            ledger.replace_shift_deliveries(conn, shift, deliveries)
            ledger.record_shift_deliveries(conn, shift, shop.admin_id, deliveries, datetime.now(UTC))
        return {
            "deliveries": len(deliveries),
            "accepted_at": dg.MetadataValue.text(", ".join(d.accepted_time.strftime("%H:%M") for d in deliveries)
                                                 or "none in this shift"),
            "products_delivered": sum(len(d.lines) for d in deliveries),
            "units_delivered": sum(line.quantity for d in deliveries for line in d.lines),
        }

    @dg.asset(partitions_def=partitions, group_name=SHOP_GROUP, deps=[synced_cache], kinds={"sqlalchemy"},
              backfill_policy=SINGLE_RUN_BACKFILL)
    def shift_deliveries(context: dg.AssetExecutionContext, shop_databases: ShopDatabases) -> dg.MaterializeResult:
        """The courier's deliveries during the shift, accepted by the shop's admin and recorded locally
        (they restock the shelf at their accepted time and are kept until reported)."""
        return dg.MaterializeResult(metadata=combined_metadata([
            take_deliveries(shop, shift, shop_databases)
            for shop, shift in shifts_in_order(world, context.partition_keys)]))

    def simulate_shift(shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases) -> tuple[dict[str, Any], dict]:
        with shop_databases.transaction(shop.shop_id) as conn:
            if waiting := ledger.earlier_shifts_without_sales(conn, shift.start):
                # The dependency on the previous shift orders a backfill's runs, except when the shift
                # before the backfill was never run: then Dagster may launch a later shift first, and
                # selling now would sell the stock an earlier shift has yet to sell.
                raise dg.Failure(allow_retries=False, description=(
                    f"shop {shop.shop_id}: shift {shift.start:%Y-%m-%d %H:%M} UTC comes after "
                    f"{', '.join(f'{w:%Y-%m-%d %H:%M}' for w in waiting)} UTC, whose deliveries are in but whose "
                    "sales are not; run that shift first (re-executing this one afterwards gives the right "
                    "receipts). Nothing was written."))
            ledger.delete_shift_receipts(conn, shift)
            sales = simulate_terminal_sales(world, shop, shift, ledger.shelf(conn), ledger.stock_at(conn, shift.start),
                                            ledger.shift_deliveries(conn, shift))
            ledger.insert_receipts(conn, shift, sales.receipts)
            ledger.recompute_stock(conn)
            ledger.record_shift_sales(conn, shift, shop.admin_id, sales, datetime.now(UTC))
            negative = ledger.negative_stock(conn)
        return {
            "receipts": len(sales.receipts),
            "receipt_lines": sales.lines,
            "units_sold": sales.units,
            "revenue": float(sales.revenue),
            "per_terminal": terminal_table(sales),
            "revenue_by_hour": revenue_by_hour_plot(sales, world.timezone),
            "customers_turned_away": sales.customers_turned_away,
            "products_sold_out": len(sales.products_sold_out),
            "stock_units_at_close": sum(sales.closing_stock.values()),
        }, negative

    @dg.asset(partitions_def=partitions, group_name=SHOP_GROUP,
              deps=[synced_cache, shift_deliveries,
                    dg.AssetDep("shift_transactions", partition_mapping=PREVIOUS_SHIFT)],
              kinds={"sqlalchemy"}, backfill_policy=SINGLE_RUN_BACKFILL,
              check_specs=[dg.AssetCheckSpec("stock_never_negative", asset="shift_transactions", blocking=True,
                                             description="No product's stock is below zero after the shift.")])
    def shift_transactions(context: dg.AssetExecutionContext, shop_databases: ShopDatabases) -> dg.MaterializeResult:
        """Every receipt of the shop's terminals during the shift, simulated from a seed of the shop and
        shift; a re-run replaces the shift's receipts with the same ones, in one transaction."""
        figures, negative = [], {}
        for shop, shift in shifts_in_order(world, context.partition_keys):
            shift_figures, shift_negative = simulate_shift(shop, shift, shop_databases)
            figures.append(shift_figures)
            if shift_negative:
                negative[f"{shift.code}|{shop.shop_id}"] = shift_negative
        # One shift: {product: stock}; several: the same per "<shift code>|<shop>" that went negative.
        shown = next(iter(negative.values())) if len(figures) == 1 and negative else negative
        stock_check = dg.AssetCheckResult(passed=not negative,
                                          metadata={"negative_products": dg.MetadataValue.json(shown)})
        return dg.MaterializeResult(check_results=[stock_check], metadata=combined_metadata(figures))

    return [synced_cache, shift_deliveries, shift_transactions]
