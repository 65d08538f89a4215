"""Faults (marker ``faults``; ``make test PYTEST_ARGS="-m faults"`` runs them alone): a Sync API that
answers 5xx, too slowly or with garbage, and a Postgres connection lost in the middle of a shift.
The report killed between its ClickHouse insert and its bookkeeping is in test_reports.py
(``test_a_failure_after_the_insert_then_a_rerun_leaves_one_copy``), marked the same way."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select

from rossmann_local.defs import SHOP_SHIFT_JOB, build_definitions
from rossmann_local.domain.catalogue import BEGINNING_OF_TIME
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.topics import CATALOGUE_TOPICS, PARTITIONS, STOCK_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.local.broker import LocalBroker
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.kafka import KafkaResource, RawMessage
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.cache import sync_watermark
from rossmann_local.shop_db.models import Category, Product, Shift, StockMessage, Transaction
from rossmann_local.sync_api.outbox import OutboxRelay
from rossmann_local.sync_api.server import LoopbackServer
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import PROVENANCE
from rossmann_local_tests.helpers import materialize_shift, receipts_of, shift_of, step_error
from rossmann_local_tests.in_process import CatalogueSensorDriver, MemoryCursor, run_shifts

pytestmark = pytest.mark.faults
STOCK = ["shift_stock_levels"]


class MisbehavingSyncApi:
    """An ASGI app that answers every request the way a test scripts it: a status, a body, a delay."""

    def __init__(self) -> None:
        self.status, self.body, self.delay, self.requests = 200, b"[]", 0.0, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture
def misbehaving() -> Iterator[tuple[MisbehavingSyncApi, str]]:
    app = MisbehavingSyncApi()
    with LoopbackServer(app) as server:  # type: ignore[arg-type]
        yield app, server.url


@pytest.mark.parametrize(("status", "body", "delay", "says"), [
    (503, b'{"detail": "overloaded"}', 0.0, "Sync API answered 503"),
    (200, b'[{"category_id": "one", "name": 7}]', 0.0, "invalid answer"),
    (200, b"<html>surprise</html>", 0.0, "invalid answer"),
    (200, b"[]", 2.0, "did not answer GET /categories/sync within 0.5 s"),
])
def test_a_bad_sync_api_is_retried_a_bounded_number_of_times_then_fails_clearly_and_changes_nothing(
        world: World, sqlite_shops: ShopDatabases, misbehaving: tuple[MisbehavingSyncApi, str],
        status: int, body: bytes, delay: float, says: str) -> None:
    app, url = misbehaving
    app.status, app.body, app.delay = status, body, delay
    client = SyncApiClient(base_url=url, timeout_seconds=0.5)
    result = materialize_shift(world, shift_of(world), 1, {"shop_databases": sqlite_shops, "sync_api": client},
                               assets=("synced_cache",), raise_on_error=False)
    assert not result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 2, "the asset's retry policy: two more tries (1 s, then 2 s), then the failure"
    assert app.requests == 3, "one request per try: the categories fail first, products are never asked"
    error = step_error(result)
    assert error.cls_name == "SyncApiError" and says in error.message
    with sqlite_shops.transaction(1) as conn:
        assert conn.scalar(select(func.count()).select_from(Category)) == 0
        assert conn.scalar(select(func.count()).select_from(Product)) == 0
        assert sync_watermark(conn, "categories") is None and sync_watermark(conn, "products") is None


@pytest.mark.postgres
def test_a_postgres_connection_lost_mid_shift_fails_cleanly_and_the_retry_gives_the_same_shift(
        world: World, postgres_shops: ShopDatabases, sqlite_shops: ShopDatabases, sync_api: SyncApiClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    shift = shift_of(world)
    original = ledger.insert_receipts

    def insert_then_lose_the_connection(conn: Any, *args: Any, **kwargs: Any) -> None:
        original(conn, *args, **kwargs)  # the receipts are written, not committed ...
        conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")  # ... and the server drops us

    monkeypatch.setattr(ledger, "insert_receipts", insert_then_lose_the_connection)
    lost = materialize_shift(world, shift, 2, {"shop_databases": postgres_shops, "sync_api": sync_api},
                             raise_on_error=False)
    assert not lost.success
    [failure] = [e for e in lost.all_events if e.is_step_failure]
    assert "terminating connection" in failure.step_failure_data.error.to_string()
    with postgres_shops.transaction(2) as conn:  # a new connection from the pool (pre-ping)
        assert conn.scalar(select(func.count()).select_from(Transaction)) == 0, "no half shift is visible"
        assert conn.scalar(select(func.count()).select_from(Shift).where(Shift.sales_recorded_at_utc.is_not(None))) == 0

    monkeypatch.setattr(ledger, "insert_receipts", original)
    assert materialize_shift(world, shift, 2, {"shop_databases": postgres_shops, "sync_api": sync_api}).success
    assert materialize_shift(world, shift, 2, {"shop_databases": sqlite_shops, "sync_api": sync_api}).success
    assert receipts_of(postgres_shops, 2) == receipts_of(sqlite_shops, 2), "the retry gives the very same shift"


def catalogue_of_shop(shops: ShopDatabases, shop_id: int) -> dict[int, tuple[Any, ...]]:
    with shops.transaction(shop_id) as conn:
        return {p.product_id: (p.name, p.description, p.price, p.discount) for p in conn.execute(select(Product))}


def topic_messages(kafka: KafkaResource, topic: str) -> list[RawMessage]:
    messages = []
    with kafka.consumer() as consumer:
        ends = [kafka.watermarks(consumer, topic, p) for p in range(PARTITIONS[topic])]
    for partition, (low, high) in enumerate(ends):
        messages += kafka.read_range(topic, partition, low, high)
    return messages


def test_kafka_restarted_ten_times_while_changes_stream_loses_nothing_and_applies_nothing_twice(
        world: World, store: CatalogueStore, sqlite_shops: ShopDatabases, sync_api: SyncApiClient,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The stand-in keeps changing its catalogue (outbox + relay) and the shops keep selling and
    sending stock levels, while the broker is stopped and started ten times (same port, same data)."""
    broker = LocalBroker(tmp_path / "kafka-restarts").start()
    request.addfinalizer(broker.stop)  # also when an assertion fails between a stop and a start
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers, request_timeout_seconds=3,
                          delivery_timeout_seconds=3)
    kafka.ensure_topics()
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api, "kafka": kafka,
                 "clickhouse": ClickHouseReports(dsn=f"chdb://{tmp_path / 'ch'}")}
    definitions = build_definitions(world, resources)
    shift_job = definitions.resolve_job_def(SHOP_SHIFT_JOB)
    sensor = CatalogueSensorDriver(definitions, dg.DagsterInstance.ephemeral(), MemoryCursor())
    shifts = [s for day in range(5) for s in shifts_of_day(world, world.start_date + timedelta(days=day))]
    stop_changing = threading.Event()
    changes: list[int] = []
    changer_errors: list[BaseException] = []
    cities = [c.name for c in world.cities]
    product_ids = [r.product_id for r in store.products_changed_since(world.shop_ids[0], BEGINNING_OF_TIME)]
    category_ids = [c.category_id for c in store.categories_changed_since(BEGINNING_OF_TIME)]

    def chain_keeps_changing() -> None:  # prices per city, descriptions, categories, every 30 ms
        try:
            for n in itertools.count():
                if stop_changing.wait(0.03):
                    return
                product, city = product_ids[n % len(product_ids)], cities[n % len(cities)]
                if n % 5 == 4:
                    store.update_product(product, description=f"restock note {n}")
                elif n % 7 == 6:
                    store.update_category(category_ids[n % len(category_ids)], name=f"Category {n}")
                else:
                    store.set_price(product, city, Decimal(f"{1 + n % 50}.{n % 100:02d}"), Decimal("0.05"))
                changes.append(n)
        except BaseException as exc:  # the assertions below report it
            changer_errors.append(exc)

    applied = 0

    def tick() -> None:
        nonlocal applied
        for _request, run in sensor.tick_and_run():
            assert run.success
            applied += run.output_for_node("apply_catalogue_changes")["applied"]

    relay = OutboxRelay(store, kafka, PROVENANCE).start()
    changer = threading.Thread(target=chain_keeps_changing, daemon=True)
    changer.start()
    outages = 0
    try:
        for shift in shifts:  # ten shifts, one outage each
            broker.stop()
            outages += 1
            time.sleep(0.3)
            with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
                tick()  # the sensor's tick fails and keeps its cursor
            during = run_shifts(shift_job, dg.DagsterInstance.ephemeral(), world, shift, shift)
            assert not during.success, "the shift is sold, its stock levels stay queued in the shops"
            assert [e.step_key for e in during.all_events if e.is_step_failure] == ["shift_stock_levels"]
            broker.start()
            assert run_shifts(shift_job, dg.DagsterInstance.ephemeral(), world, shift, shift, STOCK).success
            tick()
    finally:
        stop_changing.set()
        changer.join()
        relay.stop()
        if broker.pid is None:
            broker.start()
    tick()
    tick()
    try:
        assert not changer_errors and outages == 10 and len(changes) > 100
        assert store.unpublished() == [], "every committed change was published"
        catalogue_messages = sum(len(topic_messages(kafka, t)) for t in CATALOGUE_TOPICS)
        assert catalogue_messages >= len(changes)
        for shop in world.shops:  # every change reached every shop it concerns, in its newest version
            upstream = {r.product_id: (r.name, r.description, r.price, r.discount)
                        for r in store.products_changed_since(shop.shop_id, BEGINNING_OF_TIME)}
            assert catalogue_of_shop(sqlite_shops, shop.shop_id) == upstream, f"shop {shop.shop_id}"
            with sqlite_shops.transaction(shop.shop_id) as conn:
                names = dict(conn.execute(select(Category.category_id, Category.name)).all())
            assert names == {c.category_id: c.name for c in store.categories_changed_since(BEGINNING_OF_TIME)}
        assert applied <= len(changes), "no message was applied twice"
        stock = topic_messages(kafka, STOCK_TOPIC)
        for shop in world.shops:
            with sqlite_shops.transaction(shop.shop_id) as conn:
                queued = conn.execute(select(StockMessage.payload, StockMessage.sent_at_utc)).all()
            assert all(sent is not None for _, sent in queued), "every stock change left the queue"
            on_topic = [m.value.decode() for m in stock if m.key == str(shop.shop_id).encode()]
            assert sorted(on_topic) == sorted(payload for payload, _ in queued), \
                f"shop {shop.shop_id}: each stock message on the topic exactly once"
    finally:
        broker.stop()


@pytest.mark.faults
def test_a_catalogue_change_the_broker_loses_after_confirming_is_published_again(
        store: CatalogueStore, tmp_path: Path) -> None:
    """The stand-in's outbox reads each published message back at its offset once the broker had
    time to keep it: lost (here SIGKILL at once and the broker's data gone), it is published again."""
    import shutil

    from rossmann_local.sync_api.outbox import publish_outbox, verify_published

    broker = LocalBroker(tmp_path / "kafka").start()
    try:
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers, delivery_timeout_seconds=5)
        kafka.ensure_topics()
        store.update_category(2, name="Health+")
        store.set_price(3, "Berlin", Decimal("1.11"), Decimal("0"))
        assert publish_outbox(store, kafka, PROVENANCE) == 2 and store.unpublished() == []
        broker.kill()
        shutil.rmtree(broker.data_dir)
        broker.start()
        kafka.ensure_topics()
        assert verify_published(store, kafka, settle_seconds=0) == 2, "both found missing at their offsets"
        assert len(store.unpublished()) == 2, "back in the outbox"
        assert publish_outbox(store, kafka, PROVENANCE) == 2
        time.sleep(0.1)
        assert verify_published(store, kafka, settle_seconds=0) == 0 and store.unverified_placements() == []
        on_topics = sum(len(topic_messages(kafka, t)) for t in CATALOGUE_TOPICS)
        assert on_topics == 2, "each change on the topics once"
    finally:
        broker.stop()
