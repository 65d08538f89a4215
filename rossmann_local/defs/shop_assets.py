"""The shop's assets per shop x shift: the synced cache, the shift's deliveries and its transactions."""

from collections.abc import Iterator

import dagster as dg

from rossmann_local.defs.metadata import per_partition_metadata, revenue_by_hour_plot, terminal_table
from rossmann_local.defs.partitions import PREVIOUS_SHIFT, SINGLE_RUN_BACKFILL, partitions_in_order
from rossmann_local.domain.world import World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError
from rossmann_local.shop.cache import CacheSynced, sync_cache
from rossmann_local.shop.shift import DeliveriesTaken, ShiftOutOfOrder, ShiftSold, sell_shift, take_deliveries

SHOP_GROUP = "shop"
SHIFT_DELIVERIES, SHIFT_TRANSACTIONS = "shift_deliveries", "shift_transactions"
STOCK_CHECK = dg.AssetCheckKey(dg.AssetKey(SHIFT_TRANSACTIONS), "stock_never_negative")
# A Sync API that is down, answers 5xx, too slowly or with garbage gets two more tries, 1 s then 2 s
# later; then the run fails with the client's message. A 4xx or a wrong setting fails at once.
# Nothing is written before both answers validate.
SYNC_RETRIES = dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL)


def cache_figures(synced: CacheSynced) -> dict[str, object]:
    return {
        "categories_received": synced.categories.received,
        "categories_applied": synced.categories.applied,
        "products_received": synced.products.received,
        "products_applied": synced.products.applied,
        "stale_rows_skipped": synced.categories.stale + synced.products.stale,
        "placeholder_categories": synced.products.placeholders,
        "versions_added": synced.history.added,
        "late_for_sold_shifts": len(synced.history.shifts_touched),
        "products_on_shelf": synced.products_on_shelf,
        "synced_since": dg.MetadataValue.text(synced.synced_since.isoformat()),
    }


def delivery_figures(taken: DeliveriesTaken) -> dict[str, object]:
    return {
        "deliveries": len(taken.deliveries),
        "accepted_at": dg.MetadataValue.text(", ".join(d.accepted_time.strftime("%H:%M") for d in taken.deliveries)
                                             or "none in this shift"),
        "products_delivered": taken.products_delivered,
        "units_delivered": taken.units_delivered,
    }


def sales_figures(sold: ShiftSold, timezone: str) -> dict[str, object]:
    sales = sold.sales
    return {
        "receipts": len(sales.receipts),
        "receipt_lines": sales.lines,
        "units_sold": sales.units,
        "revenue": float(sales.revenue),
        "per_terminal": terminal_table(sales),
        "revenue_by_hour": revenue_by_hour_plot(sales, timezone),
        "customers_turned_away": sales.customers_turned_away,
        "products_sold_out": len(sales.products_sold_out),
        "stock_units_at_close": sum(sales.closing_stock.values()),
        # Receipts found in the shop database equal to the simulation's (written live during the
        # shift, or by an earlier run) are kept; different ones (a catalogue change that arrived after
        # they were written) are rewritten.
        "receipts_already_written": sold.stored.kept,
        "receipts_rewritten": sold.stored.replaced,
    }


def build_shop_assets(world: World, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=partitions, group_name=SHOP_GROUP, kinds={"sqlalchemy"},
              backfill_policy=SINGLE_RUN_BACKFILL, retry_policy=SYNC_RETRIES)
    def synced_cache(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                     sync_api: SyncApiClient) -> dg.MaterializeResult:
        """The shop's catalogue cache at shift start: categories, and products with its city's prices,
        pulled from the Sync API since the shop's last sync. Both answers are fetched and validated
        before anything is written, so a failing Sync API leaves the cache as it was."""
        # A run over many shifts syncs each shop once: every sync happens before any sale of the
        # run, so syncing a shop again for its later shifts would fetch nothing new. Its later
        # partitions name the partition whose sync they share.
        figures: dict[str, dict[str, object]] = {}
        first_of_shop: dict[int, tuple[str, CacheSynced]] = {}
        try:
            for key, shop, _ in partitions_in_order(world, context.partition_keys):
                if shop.shop_id not in first_of_shop:
                    first_of_shop[shop.shop_id] = (key, sync_cache(shop, shop_databases, sync_api))
                    figures[key] = cache_figures(first_of_shop[shop.shop_id][1])
                else:
                    first_key, synced = first_of_shop[shop.shop_id]
                    figures[key] = {"synced_with_partition": dg.MetadataValue.text(first_key),
                                    "products_on_shelf": synced.products_on_shelf,
                                    "synced_since": dg.MetadataValue.text(synced.synced_since.isoformat())}
        except ConfigError as exc:  # a wrong setting is not retried: it fails at once, naming the setting
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        return dg.MaterializeResult(metadata=per_partition_metadata(context, figures))

    previous_sales = dg.AssetDep(SHIFT_TRANSACTIONS, partition_mapping=PREVIOUS_SHIFT)

    @dg.multi_asset(
        partitions_def=partitions, group_name=SHOP_GROUP, can_subset=True, backfill_policy=SINGLE_RUN_BACKFILL,
        specs=[
            # Its dependency on the previous shift's sales is carried by the step it shares with
            # shift_transactions (which depends on its own previous shift): Dagster's backfills cannot
            # plan a time-shifted dependency between two different assets ("Unable to determine root
            # partitions"), and a delivery taken alone before the previous shift is sold is refused.
            dg.AssetSpec(SHIFT_DELIVERIES, deps=[synced_cache], kinds={"sqlalchemy"}, skippable=True,
                         description="The courier's delivery during the shift: ordered at the shift's start for "
                                     "every product at or below its reorder point, up to its target level (the "
                                     "stock policy), accepted by the shop's admin and recorded locally until "
                                     "reported."),
            dg.AssetSpec(SHIFT_TRANSACTIONS, deps=[synced_cache, SHIFT_DELIVERIES, previous_sales],
                         kinds={"sqlalchemy"}, skippable=True,
                         description="Every receipt of the shop's terminals during the shift, simulated from a "
                                     "seed of the shop and shift; a re-run replaces the shift's receipts with the "
                                     "same ones, in one transaction."),
        ],
        check_specs=[dg.AssetCheckSpec(STOCK_CHECK.name, asset=SHIFT_TRANSACTIONS, blocking=True,
                                       description="No product's stock is below zero after the shift.")])
    def shop_shifts(context: dg.AssetExecutionContext, shop_databases: ShopDatabases) -> Iterator[dg.MaterializeResult]:
        """A shift's delivery is ordered from the stock the previous shift's sales left, so each
        partition takes its delivery and then sells, shift after shift; a run over many shifts of a
        shop interleaves them in shift order. Either asset can also run alone."""
        selected = {key.to_user_string() for key in context.selected_asset_keys}
        delivered: dict[str, dict[str, object]] = {}
        sold_figures: dict[str, dict[str, object]] = {}
        negative: dict[str, dict[int, int]] = {}
        for key, shop, shift in partitions_in_order(world, context.partition_keys):
            try:
                if SHIFT_DELIVERIES in selected:
                    delivered[key] = delivery_figures(take_deliveries(world, shop, shift, shop_databases))
                if SHIFT_TRANSACTIONS in selected:
                    sold = sell_shift(world, shop, shift, shop_databases)
                    sold_figures[key] = sales_figures(sold, world.timezone)
                    if sold.negative_stock:
                        negative[key] = sold.negative_stock
            except ShiftOutOfOrder as exc:
                # The dependency on the previous shift orders a backfill's runs, except when the shift
                # before the backfill was never run: then Dagster may launch a later shift first.
                raise dg.Failure(description=str(exc), allow_retries=False) from None
        if SHIFT_DELIVERIES in selected:
            yield dg.MaterializeResult(asset_key=SHIFT_DELIVERIES,
                                       metadata=per_partition_metadata(context, delivered, SHIFT_DELIVERIES))
        if SHIFT_TRANSACTIONS in selected:
            # One shift: {product: stock}; several: the same per partition key that went negative.
            shown = next(iter(negative.values())) if len(sold_figures) == 1 and negative else negative
            checks = [dg.AssetCheckResult(asset_key=SHIFT_TRANSACTIONS, passed=not negative,
                                          metadata={"negative_products": dg.MetadataValue.json(shown)})]
            if STOCK_CHECK not in context.selected_asset_check_keys:  # a run may leave the check out
                checks = []
            yield dg.MaterializeResult(asset_key=SHIFT_TRANSACTIONS, check_results=checks,
                                       metadata=per_partition_metadata(context, sold_figures, SHIFT_TRANSACTIONS))

    return [synced_cache, shop_shifts]
