"""Sync the shop's catalogue cache from the Sync API at shift start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from rossmann_local.domain.catalogue import BEGINNING_OF_TIME
from rossmann_local.domain.world import Shop
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.cache import (
    UpsertCounts,
    advance_sync_watermark,
    sync_watermark,
    upsert_categories,
    upsert_products,
)
from rossmann_local.shop_db.history import VersionsRecorded, record_synced


@dataclass(frozen=True)
class CacheSynced:
    categories: UpsertCounts
    products: UpsertCounts
    history: VersionsRecorded  # versions new to the shop's history, and sold shifts a late one falls into
    products_on_shelf: int  # in the current view
    synced_since: datetime


def sync_cache(shop: Shop, shop_databases: ShopDatabases, sync_api: SyncApiClient, at: datetime) -> CacheSynced:
    """Categories, and products with the shop's city prices, changed since the shop's last sync (every
    version, those taking effect later in the shift included: the history sells each at its time),
    at ``at`` on the world's clock (the shift's start). Both answers are fetched and validated before
    anything is written, so a failing Sync API leaves the cache as it was."""
    with shop_databases.transaction(shop.shop_id) as conn:
        categories_since = sync_watermark(conn, "categories") or BEGINNING_OF_TIME
        products_since = sync_watermark(conn, "products") or BEGINNING_OF_TIME
    categories = sync_api.categories_since(categories_since, at)
    products = sync_api.products_since(shop.shop_id, products_since, at)
    now = datetime.now(UTC)  # bookkeeping only: when the sync ran, on the wall clock
    with shop_databases.transaction(shop.shop_id) as conn:
        category_counts = upsert_categories(conn, categories)
        product_counts = upsert_products(conn, products, shop.city)
        # A Sync API record carries the price of the shop's city.
        history = record_synced(conn, shop.city, categories, products)
        for entity, records in (("categories", categories), ("products", products)):
            if records:
                advance_sync_watermark(conn, entity, max(r.updated_at_utc for r in records), now)
        on_shelf = len(ledger.shelf(conn))
    return CacheSynced(category_counts, product_counts, history, on_shelf, products_since)
