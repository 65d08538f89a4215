"""Streaming against a real broker: the catalogue sensor, its upsert runs, dead letters, and the
stand-in's outbox. Each test starts reading at the offsets the topics have when it begins."""

from __future__ import annotations

import contextlib
import gc
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from confluent_kafka.admin import ConfigResource
from sqlalchemy import Connection, func, select

from rossmann_local.defs import build_definitions
from rossmann_local.defs.streaming import MAX_RANGE, SensorCursor, batches
from rossmann_local.domain.catalogue import BEGINNING_OF_TIME, iso_z
from rossmann_local.domain.catalogue_changes import message_key
from rossmann_local.domain.provenance import Provenance, world_fingerprint
from rossmann_local.domain.scenario import plan_day
from rossmann_local.domain.topics import (
    CATALOGUE_TOPICS,
    CATEGORY_TOPIC,
    DEAD_LETTER_TOPIC,
    PARTITIONS,
    PRODUCT_DESCRIPTION_TOPIC,
    PRODUCT_TOPIC,
)
from rossmann_local.domain.world import World
from rossmann_local.local.chain_admin import inject_stream_faults, make_changes
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError, load_scenario
from rossmann_local.shop import catalogue as shop_catalogue
from rossmann_local.shop.catalogue import catalogue_lag
from rossmann_local.shop_db.history import record_synced, shelf_at
from rossmann_local.shop_db.models import Category, PriceVersion, ProductVersion, Transaction, TransactionItem
from rossmann_local.sync_api.outbox import publish_outbox
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import ADMIN, PROVENANCE
from rossmann_local_tests.helpers import materialize_shift, products_of, shift_of
from rossmann_local_tests.in_process import CatalogueSensorDriver, MemoryCursor

T0 = datetime(2027, 1, 1, tzinfo=UTC)  # newer than anything the stand-in seeded, before the world ends


def current_cursor(kafka: KafkaResource) -> str:
    """A sensor cursor at the topics' current ends: the test sees only what it sends."""
    with kafka.consumer() as consumer:
        return SensorCursor(next_offsets={
            f"{t}:{p}": kafka.watermarks(consumer, t, p)[1] for t in CATALOGUE_TOPICS for p in range(PARTITIONS[t])
        }).dump()


def send(kafka: KafkaResource, topic: str, *payloads: bytes | dict[str, Any] | None) -> None:
    """Each payload as the chain sends it: keyed (a compacted topic refuses a record without a key),
    a message by its change's key, anything else (bytes, no value) by ``hostile``."""
    producer = kafka.producer()
    for payload in payloads:
        value = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        key = message_key(topic, value.decode()) if isinstance(payload, dict) else "hostile"
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(10) == 0


def product(product_id: int, updated: datetime, **fields: Any) -> dict[str, Any]:
    message = {"product_id": product_id, "name": f"product {product_id}", "description": "d",
               "barcode": f"4108009861{product_id:02d}", "category_id": 1, "price": 5.0, "discount": 0.0,
               "is_deleted": False, "updated_at_utc": updated.isoformat().replace("+00:00", "Z")}
    return {**message, **fields}


class Chain(CatalogueSensorDriver):
    """The Dagster side of one test: the sensor (from the topics' current ends) and the upsert job."""

    def __init__(self, world: World, shops: ShopDatabases, kafka: KafkaResource) -> None:
        self.resources = {"shop_databases": shops, "kafka": kafka, "sync_api": SyncApiClient(),
                          "clickhouse": ClickHouseReports()}
        super().__init__(build_definitions(world, self.resources), dg.DagsterInstance.ephemeral(),
                         MemoryCursor(current_cursor(kafka)))

    @property
    def cursor(self) -> str | None:
        return self.cursor_store.read()

    @cursor.setter
    def cursor(self, value: str) -> None:
        self.cursor_store.write(value)

    def apply_all(self) -> dict[str, int]:
        """One tick and all its runs; the summed outcome."""
        totals: dict[str, int] = {}
        for _request, result in self.tick_and_run():
            assert result.success
            for k, v in result.output_for_node("apply_catalogue_changes").items():
                totals[k] = totals.get(k, 0) + v
        return totals


@pytest.fixture
def chain(world: World, sqlite_shops: ShopDatabases, kafka: KafkaResource, sync_api: SyncApiClient) -> Chain:
    for shop_id in world.shop_ids:  # every shop's cache filled from the Sync API first
        materialize_shift(world, shift_of(world), shop_id, {"shop_databases": sqlite_shops, "sync_api": sync_api},
                          assets=("synced_cache",))
    return Chain(world, sqlite_shops, kafka)


def test_topics_are_created_once_with_the_reference_partitions(kafka: KafkaResource) -> None:
    assert kafka.ensure_topics() == []
    assert {t: kafka.partitions(t) for t in PARTITIONS} == PARTITIONS
    assert PARTITIONS["oltp_update_product_quantity"] == 3


def test_the_sensor_requests_one_run_for_the_new_ranges_of_every_topic(chain: Chain, kafka: KafkaResource) -> None:
    before = json.loads(chain.cursor)["next_offsets"]
    send(kafka, PRODUCT_TOPIC, product(1, T0), product(2, T0))
    send(kafka, CATEGORY_TOPIC, {"category_id": 1, "name": "Baby", "updated_at_utc": "2027-01-01T00:00:00Z"})
    result = chain.tick()
    start = before[f"{PRODUCT_TOPIC}:0"]
    category_start = before[f"{CATEGORY_TOPIC}:0"]
    [request] = result.run_requests
    assert request.run_key == (f"{CATEGORY_TOPIC}:0:{category_start}-{category_start + 1},"
                               f"{PRODUCT_TOPIC}:0:{start}-{start + 2}")
    assert request.run_config["ops"]["apply_catalogue_changes"]["config"] == {"ranges": [
        {"topic": CATEGORY_TOPIC, "partition": 0, "start_offset": category_start, "end_offset": category_start + 1},
        {"topic": PRODUCT_TOPIC, "partition": 0, "start_offset": start, "end_offset": start + 2}]}
    cursor = json.loads(result.cursor)
    assert cursor["next_offsets"][f"{PRODUCT_TOPIC}:0"] == start + 2
    assert len(cursor["pending"]) == 1, "the batch stays in the cursor until its run succeeded"
    assert chain.tick().run_requests == [], "nothing new, nothing failed: no request"
    outcome = chain.run(request).output_for_node("apply_catalogue_changes")
    assert outcome["messages"] == 3


def test_more_messages_than_a_run_takes_are_cut_into_runs_of_max_range() -> None:
    cut = batches([("a", 0, 0, MAX_RANGE - 10), ("b", 0, 5, 5 + MAX_RANGE + 30)])
    assert [b.spans for b in cut] == [
        [("a", 0, 0, MAX_RANGE - 10), ("b", 0, 5, 15)],
        [("b", 0, 15, 15 + MAX_RANGE)],
        [("b", 0, 15 + MAX_RANGE, 35 + MAX_RANGE)]]
    assert len({b.run_key for b in cut}) == 3


def test_a_cursor_of_one_range_per_run_still_parses() -> None:
    old = ('{"next_offsets": {"t:0": 4}, '
           '"pending": [{"topic": "t", "partition": 0, "start": 1, "end": 4, "attempt": 2}]}')
    cursor = SensorCursor.parse(old)
    assert not cursor.unreadable and cursor.pending[0].run_key == "t:0:1-4#2"
    assert SensorCursor.parse(cursor.dump()) == cursor


def test_a_failed_tick_requests_the_same_ranges_again(chain: Chain, kafka: KafkaResource) -> None:
    send(kafka, PRODUCT_DESCRIPTION_TOPIC, product(3, T0, price=None) | {})
    cursor = chain.cursor
    unreachable = KafkaResource(bootstrap_servers="127.0.0.1:9", request_timeout_seconds=1)
    with pytest.raises((ConfigError, dg.DagsterError)):
        chain.tick(kafka=unreachable)
    assert chain.cursor == cursor, "a failed tick does not move the cursor"
    first = [r.run_key for r in chain.tick().run_requests]
    chain.cursor = cursor
    assert [r.run_key for r in chain.tick().run_requests] == first


def test_upsert_runs_apply_prices_only_to_shops_of_the_city(chain: Chain, kafka: KafkaResource,
                                                             sqlite_shops: ShopDatabases) -> None:
    nurnberg_before = products_of(sqlite_shops, 2)[7].price
    send(kafka, PRODUCT_TOPIC, product(7, T0, price=4.44, city="Berlin", name="Dish Tabs XL",
                                       barcode="410800986181", category_id=3))
    outcome = chain.apply_all()
    assert (outcome["applied"], outcome["rows_changed"]) == (1, 5), "the description part reaches every shop"
    assert products_of(sqlite_shops, 1)[7].price == Decimal("4.44")
    assert products_of(sqlite_shops, 2)[7].price == nurnberg_before, "Nurnberg keeps its own price"
    assert {products_of(sqlite_shops, s)[7].name for s in range(1, 6)} == {"Dish Tabs XL"}
    assert chain.tick().run_requests == [] and json.loads(chain.cursor)["pending"] == []


@pytest.mark.parametrize("enabled", [True, False])
def test_applying_a_range_pauses_the_cyclic_collector_and_leaves_it_as_found(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with pytest.raises(RuntimeError, match="a failed apply"), shop_catalogue.cyclic_gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("a failed apply")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_a_price_message_is_a_version_in_its_citys_shops_and_a_description_in_every_shop(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases) -> None:
    """The chain sends a price change with the product's fields in effect at its time: the shops of the
    city it prices record a price version at its time, and a product version as its fields are new to
    them (a name they had not had), the others take its fields into their current view and record
    nothing. A description reaches every shop's history; the same message twice in one range is one
    version."""
    priced_at, described_at = T0 + timedelta(minutes=7), T0 + timedelta(minutes=9)
    price = product(7, priced_at, price=4.44, city="Berlin", name="Dish Tabs XL", barcode="410800986181",
                    category_id=3)
    description = {k: v for k, v in product(7, described_at, name="Dish Tabs XXL", barcode="410800986181",
                                              category_id=3).items() if k not in ("price", "discount")}
    send(kafka, PRODUCT_TOPIC, price, price)
    send(kafka, PRODUCT_DESCRIPTION_TOPIC, description)
    outcome = chain.apply_all()
    assert (outcome["messages"], outcome["dead_lettered"]) == (3, 0)
    assert outcome["versions_added"] == 2 + 5, "Berlin's shop: a product and a price version; all 5: the description"

    def versions_at(shop_id: int, at: datetime) -> tuple[int, int]:
        with sqlite_shops.transaction(shop_id) as conn:
            return tuple(conn.scalar(select(func.count()).select_from(table).where(
                table.c.product_id == 7, table.c.valid_from_utc == at))
                for table in (ProductVersion.__table__, PriceVersion.__table__))  # type: ignore[return-value]

    assert {s: versions_at(s, priced_at) for s in range(1, 6)} == {1: (1, 1), 2: (0, 0), 3: (0, 0), 4: (0, 0),
                                                                   5: (0, 0)}
    assert {versions_at(s, described_at) for s in range(1, 6)} == {(1, 0)}
    assert {products_of(sqlite_shops, s)[7].name for s in range(1, 6)} == {"Dish Tabs XXL"}


def test_a_price_with_the_fields_in_effect_is_a_price_version_and_a_late_description_stays_in_effect(
        chain: Chain, kafka: KafkaResource, store: CatalogueStore, sqlite_shops: ShopDatabases, world: World,
        tmp_path: Path) -> None:
    """The chain sends a price with the product's fields in effect at its time, a snapshot: where the
    shop's history has those fields in effect then, it records the price only. So a description the
    chain enters late, for a moment before the price, stays in effect at the price's time in the shop
    as in the chain's catalogue (a snapshot stored as a version would bring the old fields back then),
    and a shop that takes the same changes from the Sync API records the same versions."""
    morning = shift_of(world)
    described_at, priced_at = morning.start + timedelta(hours=1), morning.start + timedelta(hours=3)
    berlin = [shop.shop_id for shop in world.shops if shop.city == "Berlin"]
    store.set_price(7, "Berlin", Decimal("4.44"), Decimal("0"), at=priced_at)
    assert publish_outbox(store, kafka, PROVENANCE) == 1
    outcome = chain.apply_all()
    assert (outcome["applied"], outcome["versions_added"]) == (1, len(berlin)), "a price version, no product one"

    def at_the_price(shop_id: int) -> tuple[str, Decimal, int]:
        with sqlite_shops.transaction(shop_id) as conn:
            on_sale = {p.product_id: p for p in shelf_at(conn, priced_at)}[7]
            return on_sale.name, on_sale.price, conn.scalar(select(func.count()).where(
                ProductVersion.product_id == 7, ProductVersion.valid_from_utc == priced_at))

    store.update_product(7, name="Dish Tabs XL", at=described_at)  # entered late
    assert publish_outbox(store, kafka, PROVENANCE) == 1
    assert chain.apply_all()["versions_added"] == len(world.shops)
    [chains] = [r for r in store.products_changed_since(berlin[0], BEGINNING_OF_TIME)
                if r.product_id == 7 and r.updated_at_utc == priced_at]
    assert chains.name == "Dish Tabs XL", "the chain's catalogue at the price's time"
    assert {s: at_the_price(s) for s in berlin} == {s: ("Dish Tabs XL", Decimal("4.44"), 0) for s in berlin}

    def versions_since_morning(conn: Connection) -> list[list[tuple[Any, ...]]]:
        return [[tuple(r) for r in conn.execute(select(table).where(
            table.c.product_id == 7, table.c.valid_from_utc >= morning.start).order_by(table.c.valid_from_utc))]
            for table in (ProductVersion.__table__, PriceVersion.__table__)]

    synced = ShopDatabases(sqlite_dir=str(tmp_path / "synced"))  # the same moments, taken from the Sync API
    try:
        with synced.transaction(berlin[0]) as conn:
            record_synced(conn, "Berlin", store.categories_changed_since(BEGINNING_OF_TIME),
                          store.products_changed_since(berlin[0], BEGINNING_OF_TIME))
            from_the_sync_api = versions_since_morning(conn)
    finally:
        synced.dispose()
    with sqlite_shops.transaction(berlin[0]) as conn:
        assert versions_since_morning(conn) == from_the_sync_api
    assert [len(rows) for rows in from_the_sync_api] == [1, 1]


def test_a_price_message_without_a_city_changes_the_description_only(chain: Chain, kafka: KafkaResource,
                                                                      sqlite_shops: ShopDatabases) -> None:
    before = {s: products_of(sqlite_shops, s)[8].price for s in range(1, 6)}
    send(kafka, PRODUCT_TOPIC, product(8, T0, price=0.01, description="no city", barcode="410800986198",
                                       category_id=3))
    outcome = chain.apply_all()
    assert outcome["price_without_city"] == 1 and outcome["dead_lettered"] == 0
    assert {s: products_of(sqlite_shops, s)[8].price for s in range(1, 6)} == before
    assert {products_of(sqlite_shops, s)[8].description for s in range(1, 6)} == {"no city"}


def test_a_dead_lettered_message_without_a_city_is_not_counted_as_a_price_without_city(
        chain: Chain, kafka: KafkaResource) -> None:
    send(kafka, PRODUCT_TOPIC, product(777778, T0, price=0.01, barcode="999999777778"))
    outcome = chain.apply_all()
    assert (outcome["dead_lettered"], outcome["applied"], outcome["price_without_city"]) == (1, 0, 0)


def test_a_stale_update_is_ignored_and_a_repeated_range_changes_nothing(chain: Chain, kafka: KafkaResource,
                                                                         sqlite_shops: ShopDatabases) -> None:
    send(kafka, PRODUCT_TOPIC, product(1, T0 + timedelta(hours=2), price=3.33, city="Berlin",
                                       barcode="410800986129"))
    send(kafka, PRODUCT_TOPIC, product(1, T0 + timedelta(hours=1), price=9.99, city="Berlin",
                                       barcode="410800986129"))
    requests = chain.tick().run_requests
    first = chain.run(requests[0]).output_for_node("apply_catalogue_changes")
    assert (first["messages"], first["applied"], first["skipped_as_stale"], first["rows_changed"]) == (2, 1, 1, 5)
    assert products_of(sqlite_shops, 1)[1].price == Decimal("3.33")
    again = chain.run(dg.RunRequest(run_key=requests[0].run_key + "-again", run_config=requests[0].run_config))
    repeated = again.output_for_node("apply_catalogue_changes")
    assert (repeated["applied"], repeated["skipped_as_stale"], repeated["rows_changed"]) == (0, 2, 0), \
        "at-least-once delivery, exactly-once effect"


def test_a_newer_description_does_not_shadow_an_older_price_from_another_topic(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases) -> None:
    send(kafka, PRODUCT_DESCRIPTION_TOPIC, {k: v for k, v in product(
        5, T0 + timedelta(hours=5), description="new text", barcode="410800986167", category_id=2).items()
        if k not in ("price", "discount")})
    chain.apply_all()
    send(kafka, PRODUCT_TOPIC, product(5, T0 + timedelta(hours=1), price=2.22, city="La Nucia",
                                       barcode="410800986167", category_id=2, description="old text"))
    chain.apply_all()
    la_nucia = products_of(sqlite_shops, 4)[5]
    assert (la_nucia.price, la_nucia.description) == (Decimal("2.22"), "new text")


def test_kafka_changes_what_a_shop_knows_and_never_creates_a_product_or_category(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases) -> None:
    """A product id no one defined (777777) must never be sold: the chain creates products through the
    Sync API; on Kafka, a message about an id no shop synced is dead-lettered, naming the shops."""
    send(kafka, PRODUCT_TOPIC, product(777777, T0, barcode="999999777777", city="Berlin"),
         product(30, T0, category_id=60, barcode="999999999930", city="Berlin"),
         product(3, T0, category_id=60, city="Berlin"),  # a known product moved into an unknown category
         product(4, T0, name="Still applies", barcode=products_of(sqlite_shops, 1)[4].barcode, city="Berlin"))
    send(kafka, CATEGORY_TOPIC, {"category_id": 60, "name": "Garden", "updated_at_utc": "2027-01-01T00:00:00Z"})
    outcome = chain.apply_all()
    assert outcome["dead_lettered"] == 4 and outcome["applied"] == 1
    for shop in range(1, 6):
        known = products_of(sqlite_shops, shop)
        assert 777777 not in known and 30 not in known and known[3].category_id != 60
        with sqlite_shops.transaction(shop) as conn:
            assert conn.scalar(select(func.count()).where(Category.category_id == 60)) == 0
    assert products_of(sqlite_shops, 1)[4].name == "Still applies"


def test_a_message_dated_after_the_worlds_end_is_dead_lettered_and_cannot_freeze_a_product(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases, world: World) -> None:
    barcode = products_of(sqlite_shops, 1)[4].barcode
    far = datetime(2099, 1, 1, tzinfo=UTC)
    send(kafka, PRODUCT_TOPIC, product(4, far, price=0.01, barcode=barcode, city="Berlin"))
    outcome = chain.apply_all()
    assert outcome["dead_lettered"] == 1 and outcome["applied"] == 0
    send(kafka, PRODUCT_TOPIC, product(4, T0, price=3.21, barcode=barcode, city="Berlin"))
    assert chain.apply_all()["applied"] == 1, "the later legitimate change is not skipped as stale"
    assert products_of(sqlite_shops, 1)[4].price == Decimal("3.21")
    assert world.dated_outside(world.latest_effective_time) is None
    assert "after the world's end" in world.dated_outside(world.latest_effective_time + timedelta(seconds=1))


def test_a_message_dated_before_the_worlds_start_is_dead_lettered_like_one_after_its_end(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases, world: World) -> None:
    """The two ends of the world are treated alike: a version from before it began is refused."""
    barcode = products_of(sqlite_shops, 1)[4].barcode
    send(kafka, PRODUCT_TOPIC, product(4, datetime(2020, 1, 1, tzinfo=UTC), price=0.02, barcode=barcode,
                                       city="Berlin"))
    outcome = chain.apply_all()
    assert (outcome["dead_lettered"], outcome["versions_added"]) == (1, 0)
    assert world.dated_outside(world.earliest_effective_time) is None
    assert "before the world's first day" in world.dated_outside(world.earliest_effective_time
                                                                 - timedelta(seconds=1))


HOSTILE = {
    "wrong JSON": b'{"product_id": 1,',
    "not JSON at all": b"\x00\xff binary",
    "wrong types": json.dumps(product(1, T0) | {"product_id": "one", "price": "cheap"}).encode(),
    "huge values": json.dumps(product(1, T0) | {"product_id": 10**30, "price": 1e300}).encode(),
    "unknown fields": json.dumps(product(1, T0) | {"drop_table": "products"}).encode(),
    "missing keys": json.dumps({"product_id": 1}).encode(),
    "negative price": json.dumps(product(1, T0) | {"price": -5}).encode(),
    "naive time": json.dumps(product(1, T0) | {"updated_at_utc": "2030-01-01T00:00:00"}).encode(),
    "huge payload": json.dumps(product(1, T0) | {"description": "x" * 70_000}).encode(),
    "NUL in a name": json.dumps(product(1, T0) | {"name": "Baby\u0000Care"}).encode(),
    "lone surrogate": json.dumps(product(1, T0) | {"description": "\ud800"}).encode(),
    "price over the shops' bound": json.dumps(product(1, T0) | {"price": 9999999999.99}).encode(),
    "empty": b"",
}


def test_malformed_and_hostile_messages_are_dead_lettered_and_never_block_the_rest(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases) -> None:
    with kafka.consumer() as consumer:
        dead_start = kafka.watermarks(consumer, DEAD_LETTER_TOPIC, 0)[1]
    good_before = product(11, T0, name="Frame before", barcode="410800986228", category_id=4, city="Berlin")
    good_after = product(12, T0, name="Gel after", barcode="410800986235", category_id=5, city="Berlin")
    send(kafka, PRODUCT_TOPIC, good_before, *HOSTILE.values(), good_after)
    outcome = chain.apply_all()
    assert outcome["dead_lettered"] == len(HOSTILE)
    assert outcome["messages"] == len(HOSTILE) + 2
    assert products_of(sqlite_shops, 1)[11].name == "Frame before"
    assert products_of(sqlite_shops, 1)[12].name == "Gel after", "the message after the bad ones still applies"
    send(kafka, PRODUCT_TOPIC, None)
    tombstone = chain.apply_all()
    assert (tombstone["tombstones"], tombstone["dead_lettered"]) == (1, 0), \
        "a keyed record with no value is a tombstone, not a bad message"
    letters = kafka.read_range(DEAD_LETTER_TOPIC, 0, dead_start, dead_start + len(HOSTILE))
    reasons = [json.loads(m.value)["reason"] for m in letters]
    assert len(letters) == len(HOSTILE) and all(reasons)
    assert all(m.key.decode().startswith(f"{PRODUCT_TOPIC}:0:") for m in letters)
    assert any("Extra inputs are not permitted" in r for r in reasons)
    assert any("bytes, more than" in r for r in reasons)


def test_a_message_a_shop_database_refuses_is_dead_lettered_and_the_others_apply(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases) -> None:
    taken = products_of(sqlite_shops, 1)[2].barcode  # product 2's barcode, claimed by product 14
    send(kafka, PRODUCT_TOPIC, product(14, T0, name="Claims a barcode", barcode=taken, city="Berlin"),
         product(13, T0, name="Fine", barcode="999999999913", city="Berlin"))
    outcome = chain.apply_all()
    assert outcome["dead_lettered"] == 1
    assert products_of(sqlite_shops, 5)[13].name == "Fine" and products_of(sqlite_shops, 5)[14].name != \
        "Claims a barcode"


def test_a_failed_run_loses_nothing_and_its_range_is_requested_again(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases, world: World) -> None:
    send(kafka, PRODUCT_TOPIC, product(13, T0, name="Hand Cream XL", barcode="410800986242", category_id=5,
                                       city="Berlin"))
    [request] = chain.tick().run_requests
    broken = ShopDatabases(url_template="postgresql+psycopg://postgres@127.0.0.1:9/shop_{shop_id}")
    failing = Chain(world, broken, kafka)
    failing.instance = chain.instance
    failed = failing.run(request)
    assert not failed.success
    [retry] = chain.tick().run_requests
    assert retry.run_key == request.run_key + "#2" and retry.run_config == request.run_config
    assert chain.run(retry).success
    assert products_of(sqlite_shops, 4)[13].name == "Hand Cream XL"
    assert chain.tick().run_requests == [] and json.loads(chain.cursor)["pending"] == []


def test_the_stand_in_publishes_committed_changes_through_its_outbox(store: CatalogueStore,
                                                                     kafka: KafkaResource) -> None:
    with kafka.consumer() as consumer:
        ends = {t: kafka.watermarks(consumer, t, 0)[1] for t in CATALOGUE_TOPICS}
    store.set_price(3, "La Nucia", Decimal("1.11"), Decimal("0.1"))
    store.update_product(3, description="softer")
    store.update_category(1, name="Baby")
    assert len(store.unpublished()) == 3
    assert publish_outbox(store, kafka, PROVENANCE) == 3
    assert store.unpublished() == []
    [price] = kafka.read_range(PRODUCT_TOPIC, 0, ends[PRODUCT_TOPIC], ends[PRODUCT_TOPIC] + 1)
    body = json.loads(price.value)
    assert (body["product_id"], body["price"], body["discount"], body["city"]) == (3, 1.11, 0.1, "La Nucia")
    [description] = kafka.read_range(PRODUCT_DESCRIPTION_TOPIC, 0, ends[PRODUCT_DESCRIPTION_TOPIC],
                                     ends[PRODUCT_DESCRIPTION_TOPIC] + 1)
    assert "price" not in json.loads(description.value) and json.loads(description.value)["description"] == "softer"
    [category] = kafka.read_range(CATEGORY_TOPIC, 0, ends[CATEGORY_TOPIC], ends[CATEGORY_TOPIC] + 1)
    assert json.loads(category.value)["name"] == "Baby"


def test_an_unconfirmed_outbox_message_stays_unpublished(store: CatalogueStore) -> None:
    store.update_category(2, name="Health+")
    down = KafkaResource(bootstrap_servers="127.0.0.1:9", delivery_timeout_seconds=1)
    assert publish_outbox(store, down, PROVENANCE, timeout=3) == 0
    assert len(store.unpublished()) == 1


def test_the_admin_endpoint_changes_the_catalogue(sync_server, store: CatalogueStore) -> None:
    import httpx

    url = f"{sync_server.url}/admin/products/6/prices/Berlin"
    response = httpx.post(url, json={"price": 2.5, "discount": 0}, headers=ADMIN)
    assert response.status_code == 200
    assert store.unpublished()[-1].topic == PRODUCT_TOPIC
    assert httpx.post(f"{sync_server.url}/admin/products/6/prices/Paris", json={"price": 2.5},
                      headers=ADMIN).status_code == 404
    assert httpx.post(url, json={"price": -1}, headers=ADMIN).status_code == 422



@pytest.mark.parametrize("stored", ['{"next_offsets": {"local_db_category:0": 1', "[]", '{"pending": [{"x": 1}]}',
                                    '{"next_offsets": {"t:0": "nine"}}'])
def test_a_cursor_that_does_not_parse_starts_the_topics_again_instead_of_breaking_every_tick(stored: str) -> None:
    cursor = SensorCursor.parse(stored)
    assert cursor.unreadable and cursor.next_offsets == {} and cursor.pending == []
    assert SensorCursor.parse(cursor.dump()) == SensorCursor()


def test_a_range_applied_after_a_failed_one_brings_its_messages_too(chain: Chain, kafka: KafkaResource,
                                                                    sqlite_shops: ShopDatabases, world: World) -> None:
    send(kafka, PRODUCT_TOPIC, product(4, T0, price=4.04, city="Berlin", barcode="410800986150", category_id=2))
    chain.apply_all()  # the shops now stand at the end of the topic
    send(kafka, PRODUCT_TOPIC, product(1, T0 + timedelta(hours=1), price=1.11, city="Berlin",
                                       barcode="410800986129"))
    [failed] = chain.tick().run_requests  # its run fails (never runs here): the shops did not get 1.11
    the_next_range_brings_the_failed_ones_message(chain, kafka, sqlite_shops)
    assert catalogue_lag(world, world.shop_ids, sqlite_shops, kafka) == 0, \
        "the position says caught up only because the failed range is in"
    retried = chain.run(failed).output_for_node("apply_catalogue_changes")
    assert (retried["applied"], retried["read_from_behind"]) == (0, 0), "its retry then changes nothing"


def test_a_first_range_that_failed_on_fresh_shops_is_not_passed_by_the_next(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases, world: World,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shops that never had an upsert run hold no position: a first run that fails after it began must
    still leave them standing before its range, or the next range's run would move them past it."""
    send(kafka, PRODUCT_TOPIC, product(1, T0 + timedelta(hours=1), price=1.11, city="Berlin",
                                       barcode="410800986129"))
    [failed] = chain.tick().run_requests
    spans = [(r["topic"], r["partition"], r["start_offset"], r["end_offset"])
             for r in failed.run_config["ops"]["apply_catalogue_changes"]["config"]["ranges"]]

    def shop_database_down(*_args: object) -> None:
        raise RuntimeError("the shop database went away mid-run")

    with monkeypatch.context() as patched:
        patched.setattr(shop_catalogue, "apply_catalogue_messages", shop_database_down)
        with pytest.raises(RuntimeError, match="went away"):
            shop_catalogue.apply_catalogue_ranges(world, sqlite_shops, kafka, spans, PROVENANCE)
    assert catalogue_lag(world, world.shop_ids, sqlite_shops, kafka) == 1, \
        "the live sensor must not sell while the failed range is out"
    the_next_range_brings_the_failed_ones_message(chain, kafka, sqlite_shops)
    assert catalogue_lag(world, world.shop_ids, sqlite_shops, kafka) == 0


def test_a_run_applies_a_backlog_chunk_by_chunk_and_a_failed_chunk_keeps_the_ones_before(
        chain: Chain, kafka: KafkaResource, sqlite_shops: ShopDatabases, world: World,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run holds at most ``APPLY_CHUNK`` messages at once, however long its ranges: each chunk is
    applied and the shops' positions move past it before the next is read. A chunk that fails leaves
    the shops after the chunks before it, and the run's next attempt brings the rest."""
    prices = ["1.01", "1.02", "1.03", "1.04", "1.05"]
    send(kafka, PRODUCT_TOPIC, *(product(1, T0 + timedelta(hours=i + 1), price=float(p), city="Berlin",
                                         barcode="410800986129") for i, p in enumerate(prices)))
    [run] = chain.tick().run_requests
    spans = [(r["topic"], r["partition"], r["start_offset"], r["end_offset"])
             for r in run.run_config["ops"]["apply_catalogue_changes"]["config"]["ranges"]]
    assert sum(end - start for *_, start, end in spans) == 5
    monkeypatch.setattr(shop_catalogue, "APPLY_CHUNK", 2)
    apply_messages = shop_catalogue.apply_catalogue_messages
    held: list[int] = []

    def third_chunk_fails(world: World, shops: ShopDatabases, raw: list[Any]) -> shop_catalogue.ApplyOutcome:
        held.append(len(raw))
        if len(held) == 3:
            raise RuntimeError("the shop database went away mid-run")
        return apply_messages(world, shops, raw)

    with monkeypatch.context() as patched:
        patched.setattr(shop_catalogue, "apply_catalogue_messages", third_chunk_fails)
        with pytest.raises(RuntimeError, match="went away"):
            shop_catalogue.apply_catalogue_ranges(world, sqlite_shops, kafka, spans, PROVENANCE)
    assert held == [2, 2, 1], "read and applied two messages at a time"
    assert products_of(sqlite_shops, 1)[1].price == Decimal("1.04"), "the first two chunks are in"
    assert catalogue_lag(world, world.shop_ids, sqlite_shops, kafka) == 1, "the shops stand after them"
    outcome = shop_catalogue.apply_catalogue_ranges(world, sqlite_shops, kafka, spans, PROVENANCE)
    assert (outcome.messages, outcome.applied, outcome.stale) == (5, 1, 4), "counted over the chunks"
    assert products_of(sqlite_shops, 1)[1].price == Decimal("1.05")
    assert catalogue_lag(world, world.shop_ids, sqlite_shops, kafka) == 0
    with sqlite_shops.transaction(1) as conn:
        assert conn.scalar(select(func.count()).select_from(PriceVersion).where(
            PriceVersion.product_id == 1, PriceVersion.valid_from_utc > T0)) == 5, "every version, once"


def the_next_range_brings_the_failed_ones_message(chain: Chain, kafka: KafkaResource,
                                                  sqlite_shops: ShopDatabases) -> None:
    """After a range with product 1 at 1.11 failed: the next range's run (product 2 at 2.22) re-reads it."""
    send(kafka, PRODUCT_TOPIC, product(2, T0 + timedelta(hours=1), price=2.22, city="Berlin",
                                       barcode="410800986136"))
    [later] = chain.tick().run_requests
    outcome = chain.run(later).output_for_node("apply_catalogue_changes")
    assert outcome["read_from_behind"] == 1, "the failed range's message is re-read with the later one"
    assert (products_of(sqlite_shops, 1)[1].price, products_of(sqlite_shops, 1)[2].price) == (
        Decimal("1.11"), Decimal("2.22"))


def test_the_chains_messages_faults_and_dead_letters_carry_their_provenance_in_headers(
        world: World, store: CatalogueStore, kafka: KafkaResource, sqlite_shops: ShopDatabases) -> None:
    """The outbox's messages carry the time their change takes effect; each fault a scenario injects names
    its ledger entry; a dead letter carries the simulated time its message spoke of."""
    scenario = load_scenario("messy-day")
    assert scenario is not None
    provenance = Provenance.of(world, scenario.name)
    plan = plan_day(scenario, world, world.start_date)
    ends = json.loads(current_cursor(kafka))["next_offsets"]

    def new(topic: str) -> list[dict[str, str]]:
        with kafka.consumer() as consumer:
            high = kafka.watermarks(consumer, topic, 0)[1]
        return [{k: v.decode() for k, v in m.headers} for m in kafka.read_range(topic, 0, ends.get(f"{topic}:0", 0),
                                                                                   high)]

    make_changes(store, plan.changes)
    assert publish_outbox(store, kafka, provenance) == len(plan.changes)
    assert inject_stream_faults(store, kafka, plan.faults, provenance) == len(plan.faults)
    headers = [h for topic in CATALOGUE_TOPICS for h in new(topic)]
    assert {h["rossmann.world"] for h in headers} == {world_fingerprint(world)}
    assert {(h["rossmann.seed"], h["rossmann.scenario"]) for h in headers} == {("42", "messy-day")}
    published = [h for h in headers if h["rossmann.source"] == "sync-api outbox"]
    assert sorted(h["rossmann.simulated_time"] for h in published) == sorted(iso_z(c.at) for c in plan.changes)
    assert not any("rossmann.fault" in h for h in published)
    faults = [h["rossmann.fault"] for h in headers if h["rossmann.source"] == "scenario"]
    assert sorted(faults) == sorted(f"{f.entry.kind} ({f.entry.day} #{f.entry.number})" for f in plan.faults)
    spans = [(t, 0, ends.get(f"{t}:0", 0), ends.get(f"{t}:0", 0) + len(new(t))) for t in CATALOGUE_TOPICS]
    with kafka.consumer() as consumer:
        dead_ends = kafka.watermarks(consumer, DEAD_LETTER_TOPIC, 0)[1]
    outcome = shop_catalogue.apply_catalogue_ranges(world, sqlite_shops, kafka, spans, provenance)
    assert outcome.dead_letters, "no shop knows these products yet: every message is set aside"
    with kafka.consumer() as consumer:
        high = kafka.watermarks(consumer, DEAD_LETTER_TOPIC, 0)[1]
    letters = kafka.read_range(DEAD_LETTER_TOPIC, 0, dead_ends, high)
    assert len(letters) == len(outcome.dead_letters)
    dated = 0
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["rossmann.source"] == "dead letters" and headers["rossmann.scenario"] == "messy-day"
        with contextlib.suppress(ValueError, TypeError, KeyError):  # a malformed one may carry no time
            stamp = json.loads(json.loads(letter.value)["payload"])["updated_at_utc"]
            assert headers["rossmann.simulated_time"] == iso_z(datetime.fromisoformat(stamp))
            dated += 1
    assert dated >= len(plan.changes), "each change's message, set aside, keeps the time it spoke of"


def test_a_deleted_product_reaches_the_shops_then_its_tombstones_and_is_sold_until_its_time(
        chain: Chain, kafka: KafkaResource, store: CatalogueStore, sqlite_shops: ShopDatabases,
        sync_api: SyncApiClient, world: World) -> None:
    """Deleted in the Sync API at noon: its message (``is_deleted``, the time) then a tombstone for each of
    its keys on the compacted topics; the shops take the deletion (the tombstones change nothing and
    are not dead letters), keep its history, and sell it in the morning shift until noon only."""
    morning = shift_of(world)
    noon = morning.start + timedelta(hours=3)
    ends = json.loads(chain.cursor)["next_offsets"]
    store.update_product(7, is_deleted=True, at=noon)
    assert publish_outbox(store, kafka, PROVENANCE) == 1 + 1 + len(world.cities)

    def records(topic: str) -> list[tuple[bytes | None, bytes | None]]:
        with kafka.consumer() as consumer:
            high = kafka.watermarks(consumer, topic, 0)[1]
        return [(m.key, m.value) for m in kafka.read_range(topic, 0, ends[f"{topic}:0"], high)]

    [(key, deleted), (tombstone_key, nothing)] = records(PRODUCT_DESCRIPTION_TOPIC)
    assert key == tombstone_key == b"product 7" and json.loads(deleted)["is_deleted"] is True and nothing is None
    assert sorted(records(PRODUCT_TOPIC)) == sorted((f"product 7 {c.name}".encode(), None) for c in world.cities)
    outcome = chain.apply_all()
    assert (outcome["tombstones"], outcome["dead_lettered"]) == (1 + len(world.cities), 0)
    assert all(products_of(sqlite_shops, shop)[7].is_deleted for shop in world.shop_ids)
    with sqlite_shops.transaction(1) as conn:
        assert len(conn.execute(select(ProductVersion).where(ProductVersion.product_id == 7)).all()) >= 2, \
            "the history keeps the versions before the deletion"
    materialize_shift(world, morning, 1, {"shop_databases": sqlite_shops, "sync_api": sync_api})
    with sqlite_shops.transaction(1) as conn:
        sold_at = list(conn.scalars(select(Transaction.transaction_time).join(
            TransactionItem, TransactionItem.transaction_id == Transaction.transaction_id)
            .where(TransactionItem.product_id == 7)))
    assert sold_at and max(sold_at) < noon, "sold in the morning, never after its deletion took effect"


def test_the_catalogue_topics_are_compacted_and_the_others_not(kafka: KafkaResource) -> None:
    admin = kafka.admin()  # kept while its answers come: a client dropped early cancels them
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in PARTITIONS]
    policies = {resource.name: future.result()["cleanup.policy"].value
                for resource, future in admin.describe_configs(resources).items()}
    assert policies == {topic: "compact" if topic in CATALOGUE_TOPICS else "delete" for topic in PARTITIONS}
