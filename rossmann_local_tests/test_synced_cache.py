"""The synced cache asset, materialized on real SQLite and real Postgres against the stand-in over HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select, update

from rossmann_local.domain.catalogue import CategoryRecord, ProductRecord
from rossmann_local.domain.world import World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient, SyncApiError
from rossmann_local.shop_db.cache import PLACEHOLDER_UPDATED_AT, upsert_categories, upsert_products
from rossmann_local.shop_db.models import Category, Product
from rossmann_local.sync_api.server import LoopbackServer
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.helpers import (
    materialize_shift,
    metadata,
    products_of,
    shift_of,
    step_error,
    stock_and_ledger,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sync(world: World, shops: ShopDatabases, api: SyncApiClient, shop_id: int = 1, shift_index: int = 0):
    result = materialize_shift(world, shift_of(world, index=shift_index), shop_id,
                               {"shop_databases": shops, "sync_api": api}, assets=("synced_cache",))
    return metadata(result, "synced_cache")


def sync_failure(world: World, shops: ShopDatabases, api: SyncApiClient, shift_index: int = 0) -> tuple[int, str]:
    """(tries, the user's error) of a synced_cache run that fails."""
    import dagster as dg

    result = materialize_shift(world, shift_of(world, index=shift_index), 1, {"shop_databases": shops, "sync_api": api},
                               assets=("synced_cache",), raise_on_error=False)
    assert not result.success
    error = step_error(result)
    retries = sum(1 for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY)
    return 1 + retries, f"{error.cls_name}: {error.message}"


def test_first_sync_fills_the_cache_with_the_shops_city_prices(world: World, shop_databases: ShopDatabases,
                                                               sync_api: SyncApiClient) -> None:
    meta = sync(world, shop_databases, sync_api, shop_id=4)
    assert (meta["categories_applied"], meta["products_applied"], meta["products_on_shelf"]) == (5, 14, 14)
    products = products_of(shop_databases, 4)
    kept, ledger_stock = stock_and_ledger(shop_databases, 4)  # the shift also delivered and sold
    assert kept == ledger_stock
    for product in world.products:
        cached = products[product.product_id]
        assert (cached.price, cached.discount) == (product.prices["La Nucia"].price,
                                                   product.prices["La Nucia"].discount)
        assert cached.stock_quantity == ledger_stock.get(product.product_id, 0) and cached.barcode == product.barcode
        assert cached.updated_at_utc.tzinfo == UTC


def test_incremental_sync_applies_a_changed_row_to_the_shops_of_its_city(
        world: World, shop_databases: ShopDatabases, sync_api: SyncApiClient, store: CatalogueStore) -> None:
    for shop_id in (1, 2):
        sync(world, shop_databases, sync_api, shop_id=shop_id)
    assert sync(world, shop_databases, sync_api, shop_id=1, shift_index=1)["products_received"] == 0
    store.set_price(7, "Berlin", Decimal("7.77"), Decimal("0.25"))
    store.update_category(2, name="Health & Pharmacy")
    berlin = sync(world, shop_databases, sync_api, shop_id=1, shift_index=1)
    nurnberg = sync(world, shop_databases, sync_api, shop_id=2, shift_index=1)
    assert (berlin["products_received"], berlin["products_applied"], berlin["categories_applied"]) == (1, 1, 1)
    assert (nurnberg["products_received"], nurnberg["categories_applied"]) == (0, 1)
    assert (products_of(shop_databases, 1)[7].price, products_of(shop_databases, 1)[7].discount) == (
        Decimal("7.77"), Decimal("0.2500"))
    assert products_of(shop_databases, 2)[7].price == world.products[6].prices["Nurnberg"].price
    with shop_databases.transaction(2) as conn:
        assert conn.scalar(select(Category.name).where(Category.category_id == 2)) == "Health & Pharmacy"


def _product(product_id: int, updated: datetime, price: str = "1.00", category_id: int = 1) -> ProductRecord:
    return ProductRecord(product_id=product_id, name=f"p{product_id}", description=None,
                         barcode=f"{product_id:012d}", category_id=category_id, price=Decimal(price),
                         discount=Decimal("0"), updated_at_utc=updated)


def _category(category_id: int, updated: datetime, name: str) -> CategoryRecord:
    return CategoryRecord(category_id=category_id, name=name, updated_at_utc=updated)


def test_an_older_row_never_overwrites_a_newer_one_and_stock_is_kept(shop_databases: ShopDatabases) -> None:
    with shop_databases.transaction(1) as conn:
        upsert_categories(conn, [_category(1, T0, "c")])
        assert upsert_products(conn, [_product(1, T0 + timedelta(hours=2), "2.00")], "Berlin").applied == 1
        conn.execute(update(Product).values(stock_quantity=40))
        older = upsert_products(conn, [_product(1, T0 + timedelta(hours=1), "1.00")], "Berlin")
        same = upsert_products(conn, [_product(1, T0 + timedelta(hours=2), "9.00")], "Berlin")
        assert (older.applied, older.stale, same.applied) == (0, 1, 0)
        newer = upsert_products(conn, [_product(1, T0 + timedelta(hours=3), "3.00")], "Berlin")
        assert newer.applied == 1
        row = conn.execute(select(Product.price, Product.stock_quantity)).one()
    assert row == (Decimal("3.00"), 40), "newest price wins, local stock untouched"


def test_a_batch_with_the_same_product_twice_keeps_the_newest(shop_databases: ShopDatabases) -> None:
    with shop_databases.transaction(1) as conn:
        counts = upsert_products(conn, [_product(5, T0 + timedelta(minutes=2), "2.00"),
                                        _product(5, T0 + timedelta(minutes=1), "1.00")], "Berlin")
        assert (counts.received, counts.applied) == (2, 1)
        assert conn.scalar(select(Product.price)) == Decimal("2.00")


def test_a_product_before_its_category_is_kept_and_the_category_fills_in_later(
        shop_databases: ShopDatabases) -> None:
    with shop_databases.transaction(3) as conn:
        counts = upsert_products(conn, [_product(9, T0, category_id=77)], "Berlin")
        assert (counts.applied, counts.placeholders) == (1, 1)
        placeholder_time = conn.scalar(select(Category.updated_at_utc).where(Category.category_id == 77))
        assert placeholder_time == PLACEHOLDER_UPDATED_AT
        assert upsert_categories(conn, [_category(77, T0 - timedelta(days=365), "Garden")]).applied == 1
        assert conn.scalar(select(Category.name).where(Category.category_id == 77)) == "Garden"
        assert conn.scalar(select(Product.category_id).where(Product.product_id == 9)) == 77


# --- a misbehaving upstream --------------------------------------------------------------------------

def faulty_sync_api(mode: str) -> FastAPI:
    """Serves docs/contracts.md's paths, but wrong: a 5xx, a hang, broken JSON, or JSON of the wrong shape."""
    app = FastAPI()

    @app.get("/{path:path}")
    def answer(path: str) -> Response:
        if mode == "5xx":
            return JSONResponse({"detail": "database is down"}, status_code=503)
        if mode == "slow":
            time.sleep(1.5)
            return JSONResponse([])
        if mode == "invalid-json":
            return Response("[{\"category_id\": 1,", media_type="application/json")
        return JSONResponse([{"category_id": "one", "name": ""}])

    return app


@pytest.fixture(params=["5xx", "slow", "invalid-json", "wrong-shape"])
def faulty_api(request: pytest.FixtureRequest) -> Iterator[tuple[str, SyncApiClient]]:
    with LoopbackServer(faulty_sync_api(request.param)) as server:
        yield request.param, SyncApiClient(base_url=server.url, timeout_seconds=0.5)


EXPECTED_MESSAGE = {
    "5xx": r"Sync API answered 503 to GET /categories/sync",
    "slow": r"did not answer GET /categories/sync within 0.5 s \(ROSSMANN_SYNC_API_TIMEOUT_SECONDS\)",
    "invalid-json": r"invalid answer to GET /categories/sync",
    "wrong-shape": r"invalid answer to GET /categories/sync",
}


def test_a_failing_sync_api_gives_a_clear_error_and_leaves_the_cache_unchanged(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient,
        faulty_api: tuple[str, SyncApiClient]) -> None:
    mode, broken = faulty_api
    sync(world, sqlite_shops, sync_api)
    before = {pid: tuple(p) for pid, p in products_of(sqlite_shops, 1).items()}
    tries, error = sync_failure(world, sqlite_shops, broken, shift_index=1)
    assert tries == 3 and error.startswith("SyncApiError") and re.search(EXPECTED_MESSAGE[mode], error)
    assert {pid: tuple(p) for pid, p in products_of(sqlite_shops, 1).items()} == before


def test_an_unreachable_sync_api_names_the_setting(world: World, sqlite_shops: ShopDatabases) -> None:
    tries, error = sync_failure(world, sqlite_shops, SyncApiClient(base_url="http://127.0.0.1:9", timeout_seconds=1))
    assert tries == 3 and re.search(r"cannot reach the Sync API at http://127.0.0.1:9.*ROSSMANN_SYNC_API_URL", error)


def test_a_shop_the_sync_api_does_not_know_fails_clearly(sqlite_shops: ShopDatabases,
                                                         sync_api: SyncApiClient) -> None:
    from rossmann_local.domain.world import reference_world

    bigger = reference_world(shop_count=6)
    with pytest.raises(SyncApiError, match=r"answered 404 to GET /products/sync.*shop 6 not found"):
        sync(bigger, sqlite_shops, sync_api, shop_id=6)
