"""Stock levels to the chain: the right key and JSON, every 50 simulated minutes, nothing lost
while the broker is down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rossmann_local.domain.stock_levels import checkpoints
from rossmann_local.domain.topics import STOCK_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.local.broker import LocalBroker
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop.stock import StockNotDelivered
from rossmann_local.shop_db.ledger import stock_at
from rossmann_local.shop_db.models import StockMessage
from rossmann_local_tests.helpers import ASSET_NAMES, materialize_shift, metadata, shift_of

WITH_STOCK = (*ASSET_NAMES, "shift_stock_levels")


def stock_topic_ends(kafka: KafkaResource) -> list[int]:
    with kafka.consumer() as consumer:
        return [kafka.watermarks(consumer, STOCK_TOPIC, p)[1] for p in range(3)]


def new_stock_messages(kafka: KafkaResource, since: list[int]) -> list:
    now = stock_topic_ends(kafka)
    return [m for p in range(3) for m in kafka.read_range(STOCK_TOPIC, p, since[p], now[p])]


def queued(shops: ShopDatabases, shop_id: int, sent: bool) -> int:
    with shops.transaction(shop_id) as conn:
        column = StockMessage.sent_at_utc
        return conn.scalar(select(func.count()).where(column.is_not(None) if sent else column.is_(None)))


def test_stock_messages_round_trip_with_the_shop_key_and_the_reference_json(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient, kafka: KafkaResource) -> None:
    before = stock_topic_ends(kafka)
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api, "kafka": kafka}
    result = materialize_shift(world, shift_of(world), 3, resources, assets=WITH_STOCK)
    sent = metadata(result, "shift_stock_levels")["messages_sent"]
    messages = new_stock_messages(kafka, before)
    assert len(messages) == sent > 0
    assert {m.key for m in messages} == {b"3"}
    assert len({m.partition for m in messages}) == 1, "one key, one partition: the chain reads them in order"
    bodies = [json.loads(m.value) for m in messages]
    assert all(set(b) == {"shop_id", "updated_products"} and b["shop_id"] == "3" for b in bodies)
    shift = shift_of(world)
    moments = checkpoints(shift, 50)
    assert (moments[1] - moments[0]).total_seconds() == 50 * 60 and moments[-1] == shift.end
    with sqlite_shops.transaction(3) as conn:
        final = stock_at(conn, shift.end)
    last_seen: dict[str, int] = {}
    for body in bodies:
        last_seen |= body["updated_products"]
    assert all(last_seen[str(pid)] == qty for pid, qty in final.items() if str(pid) in last_seen)
    assert all(isinstance(q, int) and q >= 0 for b in bodies for q in b["updated_products"].values())
    again = materialize_shift(world, shift_of(world), 3, resources, assets=("shift_stock_levels",))
    assert metadata(again, "shift_stock_levels")["messages_sent"] == 0, "confirmed messages are not sent twice"


@pytest.fixture
def own_broker(tmp_path: Path) -> LocalBroker:
    broker = LocalBroker(tmp_path / "own-kafka").start()
    KafkaResource(bootstrap_servers=broker.bootstrap_servers).ensure_topics()
    yield broker
    broker.stop()


def test_the_producer_keeps_unsent_changes_while_the_broker_is_down_and_sends_them_after(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient, own_broker: LocalBroker) -> None:
    kafka = KafkaResource(bootstrap_servers=own_broker.bootstrap_servers, delivery_timeout_seconds=3)
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api, "kafka": kafka}
    materialize_shift(world, shift_of(world), 1, resources, assets=ASSET_NAMES)
    own_broker.stop()
    with pytest.raises(StockNotDelivered, match=r"KAFKA_BOOTSTRAP_SERVERS.*stay queued"):
        materialize_shift(world, shift_of(world), 1, resources, assets=("shift_stock_levels",))
    waiting = queued(sqlite_shops, 1, sent=False)
    assert waiting > 0 and queued(sqlite_shops, 1, sent=True) == 0
    own_broker.start()
    before = stock_topic_ends(kafka)
    materialize_shift(world, shift_of(world, index=1), 1, resources, assets=ASSET_NAMES)
    result = materialize_shift(world, shift_of(world, index=1), 1, resources, assets=("shift_stock_levels",))
    meta = metadata(result, "shift_stock_levels")
    assert meta["sent_from_earlier_shifts"] == waiting, "the morning's queued messages go first"
    assert queued(sqlite_shops, 1, sent=False) == 0
    assert len(new_stock_messages(kafka, before)) == meta["messages_sent"]
