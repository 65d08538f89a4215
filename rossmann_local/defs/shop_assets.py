"""The shop's assets per shop x shift, made by one step (the shift in the shop): the synced cache,
the shift's deliveries and its transactions."""

from collections.abc import Iterator

import dagster as dg

from rossmann_local.defs.metadata import per_partition_metadata, revenue_by_hour_plot, terminal_table
from rossmann_local.defs.partitions import PREVIOUS_SHIFT, partitions_in_order
from rossmann_local.domain.world import World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError
from rossmann_local.shop.shift import DeliveriesTaken, ShiftOutOfOrder, ShiftSold, sell_shift, take_deliveries
from rossmann_local.shop.sync import CacheSynced, sync_cache

SHOP_GROUP = "shop"
SHOP_SHIFT, SYNCED_CACHE = "shop_shift", "synced_cache"
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


def previous(asset: str) -> dg.AssetDep:
    """The same asset of the shop's previous shift: each starts from what that shift left (the cache
    synced since, the stock a delivery is ordered from and sold from)."""
    return dg.AssetDep(asset, partition_mapping=PREVIOUS_SHIFT)


def build_shop_assets(world: World, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    # The three assets of a shop's shift in its database are made by one step that cannot be split,
    # each depending on its own previous shift only: Dagster's backfill daemon then launches a shop's
    # shift once the one before it is materialized. A dependency between two assets of the step beside
    # the one on the previous shift makes the daemon refuse the first shift of a backfill ("parent
    # synced_cache is requesting a different set of partitions"), so the order within the step is the
    # step's own: sync, deliveries, sales. The stock levels and the reports follow in their own step.
    @dg.multi_asset(
        name=SHOP_SHIFT, partitions_def=partitions, can_subset=False, retry_policy=SYNC_RETRIES,
        specs=[
            dg.AssetSpec(SYNCED_CACHE, group_name=SHOP_GROUP, deps=[previous(SYNCED_CACHE)], kinds={"sqlalchemy"},
                         description="The shop's catalogue cache at shift start: categories, and products with "
                                     "its city's prices, pulled from the Sync API since the shop's last sync. "
                                     "Both answers are fetched and validated before anything is written, so a "
                                     "failing Sync API leaves the cache as it was."),
            dg.AssetSpec(SHIFT_DELIVERIES, group_name=SHOP_GROUP, deps=[previous(SHIFT_DELIVERIES)],
                         kinds={"sqlalchemy"},
                         description="The courier's delivery during the shift (after the synced cache): ordered at "
                                     "the shift's start for every product at or below its reorder point, up to its "
                                     "target level (the stock policy), accepted by the shop's admin and recorded "
                                     "locally until reported."),
            dg.AssetSpec(SHIFT_TRANSACTIONS, group_name=SHOP_GROUP, deps=[previous(SHIFT_TRANSACTIONS)],
                         kinds={"sqlalchemy"},
                         description="Every receipt of the shop's terminals during the shift (after its delivery), "
                                     "simulated from a seed of the shop and shift; a re-run replaces the shift's "
                                     "receipts with the same ones, in one transaction."),
        ],
        check_specs=[dg.AssetCheckSpec(STOCK_CHECK.name, asset=SHIFT_TRANSACTIONS, blocking=True,
                                       description="No product's stock is below zero after the shift.")])
    def shop_shift(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                   sync_api: SyncApiClient) -> Iterator[dg.MaterializeResult]:
        """A shift in the shop: sync the cache, take the delivery ordered from the stock the previous
        shift left, sell. A shift whose previous shift the shop has not sold is refused, writing
        nothing. A run over many shifts walks them in shift order and syncs each shop once, before its
        first sale of the run: a second sync would fetch nothing new; its later partitions name the
        partition whose sync they share."""
        synced_figures: dict[str, dict[str, object]] = {}
        delivered: dict[str, dict[str, object]] = {}
        sold_figures: dict[str, dict[str, object]] = {}
        negative: dict[str, dict[int, int]] = {}
        first_of_shop: dict[int, tuple[str, CacheSynced]] = {}
        for key, shop, shift in partitions_in_order(world, context.partition_keys):
            try:
                if shop.shop_id not in first_of_shop:
                    first_of_shop[shop.shop_id] = (key, sync_cache(shop, shop_databases, sync_api, shift.start))
                    synced_figures[key] = cache_figures(first_of_shop[shop.shop_id][1])
                else:
                    first_key, synced = first_of_shop[shop.shop_id]
                    synced_figures[key] = {"synced_with_partition": dg.MetadataValue.text(first_key),
                                           "products_on_shelf": synced.products_on_shelf,
                                           "synced_since": dg.MetadataValue.text(synced.synced_since.isoformat())}
                delivered[key] = delivery_figures(take_deliveries(world, shop, shift, shop_databases))
                sold = sell_shift(world, shop, shift, shop_databases)
            except (ConfigError, ShiftOutOfOrder) as exc:
                # A wrong setting, or a shift before its predecessor: not retried, the run fails at once
                # with the message (it names the setting, or the shift to run first).
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            sold_figures[key] = sales_figures(sold, world.timezone)
            if sold.negative_stock:
                negative[key] = sold.negative_stock
        yield dg.MaterializeResult(asset_key=SYNCED_CACHE,
                                   metadata=per_partition_metadata(context, synced_figures, SYNCED_CACHE))
        yield dg.MaterializeResult(asset_key=SHIFT_DELIVERIES,
                                   metadata=per_partition_metadata(context, delivered, SHIFT_DELIVERIES))
        # One shift: {product: stock}; several: the same per partition key that went negative.
        shown = next(iter(negative.values())) if len(sold_figures) == 1 and negative else negative
        yield dg.MaterializeResult(
            asset_key=SHIFT_TRANSACTIONS, metadata=per_partition_metadata(context, sold_figures, SHIFT_TRANSACTIONS),
            check_results=[dg.AssetCheckResult(asset_key=SHIFT_TRANSACTIONS, passed=not negative,
                                               metadata={"negative_products": dg.MetadataValue.json(shown)})])

    return [shop_shift]
