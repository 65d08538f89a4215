"""The Sync API stand-in over real HTTP: every endpoint of docs/contracts.md, same JSON, same error codes."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from rossmann_local.domain.catalogue import BEGINNING_OF_TIME, iso_z
from rossmann_local.domain.topics import PRODUCT_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.resources import sync_api_client  # noqa: F401 - configures httpx logging
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.sync_api.server import LoopbackServer
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import TEST_PASSWORD

FIRST_SYNC = {"sync_utc_time": "0001-01-01T00:00:00Z"}


def get(server: LoopbackServer, path: str, **params: object) -> httpx.Response:
    return httpx.get(server.url + path, params=params, timeout=5)


def test_categories_sync_sends_everything_on_first_sync_with_utc_times(sync_server: LoopbackServer) -> None:
    response = get(sync_server, "/categories/sync", **FIRST_SYNC)
    assert response.status_code == 200
    body = response.json()
    assert [c["category_id"] for c in body] == [1, 2, 3, 4, 5]
    assert set(body[0]) == {"category_id", "name", "description", "is_deleted", "updated_at_utc"}
    assert body[0]["name"] == "Baby & Toys" and body[0]["is_deleted"] is False
    assert body[0]["updated_at_utc"].endswith("Z")


def test_products_sync_sends_the_price_of_the_shops_city(sync_server: LoopbackServer, world: World) -> None:
    berlin = {p["product_id"]: p for p in get(sync_server, "/products/sync", shop_id=1, **FIRST_SYNC).json()}
    la_nucia = {p["product_id"]: p for p in get(sync_server, "/products/sync", shop_id=4, **FIRST_SYNC).json()}
    assert sorted(berlin) == list(range(1, 15))
    assert set(berlin[7]) == {"product_id", "name", "description", "barcode", "category_id", "price", "discount",
                              "is_deleted", "updated_at_utc"}
    product = world.products[0]
    assert berlin[1]["price"] == float(product.prices["Berlin"].price)
    assert la_nucia[1]["price"] == float(product.prices["La Nucia"].price)
    assert la_nucia[1]["discount"] == float(product.prices["La Nucia"].discount) == 0.1
    assert isinstance(berlin[1]["price"], float), "money travels as JSON numbers"


def test_a_price_message_carries_the_products_fields_in_effect_at_its_time(store: CatalogueStore,
                                                                           world: World) -> None:
    """A description entered ahead for the afternoon, then a price change for the morning: the price's
    message carries the morning's description, which the Sync API answers the shop for that moment
    too (the shops of the city record it as the product's version then)."""
    berlin = ZoneInfo(world.timezone)
    morning, afternoon = (datetime.combine(world.start_date, time(h), tzinfo=berlin) for h in (10, 15))
    store.update_product(1, description="the afternoon's text", at=afternoon)
    store.set_price(1, "Berlin", Decimal("7.96"), Decimal("0"), at=morning)
    [price] = [json.loads(row.payload) for row in store.unpublished() if row.topic == PRODUCT_TOPIC]
    synced = {r.updated_at_utc: r for r in store.products_changed_since(1, BEGINNING_OF_TIME) if r.product_id == 1}
    assert price["updated_at_utc"] == iso_z(morning) and price["price"] == 7.96
    assert price["description"] == synced[morning].description != "the afternoon's text"
    assert synced[afternoon].description == "the afternoon's text"


def test_incremental_sync_sends_only_what_changed_after_the_time(sync_server: LoopbackServer,
                                                                 store: CatalogueStore) -> None:
    first = get(sync_server, "/products/sync", shop_id=2, **FIRST_SYNC).json()
    watermark = max(p["updated_at_utc"] for p in first)
    assert get(sync_server, "/products/sync", shop_id=2, sync_utc_time=watermark).json() == []
    changed_at = store.set_price(7, "Nurnberg", Decimal("5.55"), Decimal("0.05"))
    [changed] = get(sync_server, "/products/sync", shop_id=2, sync_utc_time=watermark, as_of="history").json()
    assert (changed["product_id"], changed["price"], changed["discount"]) == (7, 5.55, 0.05)
    assert changed["updated_at_utc"] == iso_z(changed_at) and changed["updated_at_utc"] > watermark
    assert get(sync_server, "/products/sync", shop_id=1, sync_utc_time=watermark, as_of="history").json() == [], \
        "a Nurnberg price change is not a Berlin change"


def test_a_client_that_keeps_the_last_row_takes_the_catalogue_in_effect_now_not_tomorrows(
        sync_server: LoopbackServer, store: CatalogueStore, sync_api: SyncApiClient, world: World) -> None:
    """The original shop keeps the last row it receives per product. With a promotion on sale in the
    afternoon and tomorrow's price already entered, its afternoon sync (no ``as_of``: now on the world's
    clock, where the shops' syncs have brought it) takes the promotion, and a watermark of the
    afternoon, not tomorrow's price and tomorrow's watermark."""
    berlin = ZoneInfo(world.timezone)
    day = world.start_date
    noon, afternoon = (datetime.combine(day, time(h), tzinfo=berlin) for h in (12, 15))
    tomorrow = datetime.combine(day + timedelta(days=1), time(9), tzinfo=berlin)
    store.set_price(1, "Berlin", Decimal("7.96"), Decimal("0"), at=noon)
    store.set_price(1, "Berlin", Decimal("9.95"), Decimal("0"), at=tomorrow)
    sync_api.products_since(1, BEGINNING_OF_TIME, at=afternoon)  # our shop's afternoon sync moves the clock

    def kept(**params: object) -> dict[int, dict[str, object]]:
        rows = get(sync_server, "/products/sync", shop_id=1, sync_utc_time="2026-05-31T22:00:00Z", **params).json()
        return {row["product_id"]: row for row in rows}  # the last row per product wins, as in the original

    now = kept()
    assert (now[1]["price"], now[1]["updated_at_utc"]) == (7.96, iso_z(noon))
    assert max(row["updated_at_utc"] for row in now.values()) <= iso_z(afternoon), "a watermark of today"
    assert kept(as_of="history")[1]["price"] == 9.95, "the whole history on request, tomorrow's included"
    assert 1 not in kept(as_of=iso_z(noon - timedelta(minutes=1))), "as of a time: nothing changed by then"
    assert [c["category_id"] for c in get(sync_server, "/categories/sync", **FIRST_SYNC).json()] == [1, 2, 3, 4, 5]
    assert get(sync_server, "/products/sync", shop_id=1, as_of="yesterday", **FIRST_SYNC).status_code == 422


def test_every_change_gets_a_strictly_newer_server_time(store: CatalogueStore) -> None:
    times = [store.set_price(1, "Berlin", Decimal("1.00") + i, Decimal("0")) for i in range(20)]
    times.append(store.update_category(3, description="new").updated_at_utc)
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(t.tzinfo is not None for t in times)


def test_unknown_shop_is_404(sync_server: LoopbackServer) -> None:
    assert get(sync_server, "/products/sync", shop_id=99, **FIRST_SYNC).status_code == 404
    assert get(sync_server, "/terminals/get_available", shop_id=99).status_code == 404


def test_bad_sync_time_is_422(sync_server: LoopbackServer) -> None:
    assert get(sync_server, "/categories/sync", sync_utc_time="yesterday").status_code == 422


def test_shop_authorization(sync_server: LoopbackServer) -> None:
    ok = get(sync_server, "/shops/authorize", shop_id=4, password=TEST_PASSWORD)
    assert ok.status_code == 200
    assert ok.json() == {"shop_id": 4, "country_name": "Spain", "city_name": "La Nucia"}
    assert get(sync_server, "/shops/authorize", shop_id=4, password="wrong").status_code == 401
    assert get(sync_server, "/shops/authorize", shop_id=42, password=TEST_PASSWORD).status_code == 404


def test_employee_authorization_never_returns_the_password(sync_server: LoopbackServer, world: World) -> None:
    admin = next(e for e in world.employees if e.employee_id == 2)
    ok = get(sync_server, "/employees/authorize", email=admin.email, password=TEST_PASSWORD)
    assert ok.json() == {"employee_id": 2, "first_name": "Stannis", "last_name": "Baratheon", "role": "admin"}
    assert TEST_PASSWORD not in ok.text and "password" not in ok.text
    assert get(sync_server, "/employees/authorize", email=admin.email, password="nope").status_code == 401
    unknown = get(sync_server, "/employees/authorize", email="nobody@x", password="nope")
    wrong = get(sync_server, "/employees/authorize", email=admin.email, password="nope")
    assert (unknown.status_code, unknown.json()) == (wrong.status_code, wrong.json()) == (
        401, {"detail": "wrong e-mail or password"}), "an unknown user cannot be told from a wrong password"


def test_terminals(sync_server: LoopbackServer) -> None:
    assert get(sync_server, "/terminals/get_available", shop_id=2).json() == [4, 5, 6]
    authorize = "/terminals/authorize"
    assert get(sync_server, authorize, shop_id=2, terminal_id=5, password=TEST_PASSWORD).json() is True
    assert get(sync_server, authorize, shop_id=2, terminal_id=1, password=TEST_PASSWORD).status_code == 403
    assert get(sync_server, authorize, shop_id=2, terminal_id=5, password="wrong").status_code == 401


def test_passwords_never_reach_the_log(sync_server: LoopbackServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        get(sync_server, "/shops/authorize", shop_id=1, password="hunter2-secret")
    assert any("/shops/authorize" in r.getMessage() for r in caplog.records), "requests are logged"
    assert all("hunter2-secret" not in r.getMessage() for r in caplog.records)


def test_without_a_configured_password_nobody_authorizes(tmp_path, world: World) -> None:
    store = CatalogueStore(f"sqlite:///{tmp_path / 'nopw.sqlite'}")
    store.seed(world, password=None)
    with pytest.raises(PermissionError):
        store.authorize_shop(1, "")


def test_seeding_twice_changes_nothing(store: CatalogueStore, world: World) -> None:
    before = store.categories_changed_since(BEGINNING_OF_TIME)
    assert store.seed(world, password=TEST_PASSWORD) is False
    assert store.categories_changed_since(BEGINNING_OF_TIME) == before


def test_client_reads_both_endpoints_into_typed_records(sync_api: SyncApiClient) -> None:
    categories = sync_api.categories_since(BEGINNING_OF_TIME)
    products = sync_api.products_since(5, BEGINNING_OF_TIME)
    assert len(categories) == 5 and len(products) == 14
    assert isinstance(products[0].price, Decimal)
    assert products[0].updated_at_utc.utcoffset() == timedelta(0)
    assert sync_api.products_since(5, datetime.now(UTC)) == []


def test_a_store_made_before_the_outbox_kept_keys_gets_the_column_and_keys_new_messages(
        tmp_path: Path, world: World) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the outbox as an earlier stand-in made it
        conn.execute("CREATE TABLE outbox (message_id INTEGER PRIMARY KEY, topic VARCHAR(255) NOT NULL, "
                     "payload TEXT NOT NULL, created_at_utc DATETIME NOT NULL, published_at_utc DATETIME)")
    store = CatalogueStore(f"sqlite:///{path}")
    store.seed(world)
    store.update_category(4, name="Home", at=datetime.combine(world.start_date, time(12), tzinfo=UTC))
    assert [(row.topic, row.message_key) for row in store.unpublished()] == [("local_db_upsert_category",
                                                                              "category 4")]
