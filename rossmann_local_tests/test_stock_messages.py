"""Stock levels to the chain: the right key and JSON, every 50 simulated minutes, nothing lost
while the broker is down."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from rossmann_local.domain.provenance import world_fingerprint
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.stock_levels import (
    MAX_STOCK_MESSAGE_BYTES,
    PART_SEPARATOR,
    checkpoints,
    stock_message_parts,
    stock_sequence,
)
from rossmann_local.domain.topics import STOCK_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.local.broker import LocalBroker
from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop.stock import (
    StockNotDelivered,
    queue_shifts_stock_levels,
    queue_stock_levels,
    settle_and_verify,
)
from rossmann_local.shop_db.ledger import stock_at
from rossmann_local.shop_db.models import StockMessage
from rossmann_local.shop_db.stock_outbox import unsent_parts, verified_count
from rossmann_local_tests.conftest import PROVENANCE
from rossmann_local_tests.helpers import ASSET_NAMES, materialize_shift, metadata, shift_of
from rossmann_local_tests.in_process import QUIET_RUN_CONFIG

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
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient, own_broker: LocalBroker) -> None:
    # A broker of its own: on a shared one, the same shift's messages sent by an earlier test are
    # found on the topic (same shop, sequence and bytes) and rightly not sent again.
    kafka = KafkaResource(bootstrap_servers=own_broker.bootstrap_servers)
    before = stock_topic_ends(kafka)
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api, "kafka": kafka}
    result = materialize_shift(world, shift_of(world), 3, resources, assets=WITH_STOCK)
    sent = metadata(result, "shift_stock_levels")["messages_sent"]
    messages = new_stock_messages(kafka, before)
    assert len(messages) == sent > 0
    assert {m.key for m in messages} == {b"3"}
    assert len({m.partition for m in messages}) == 1, "one key, one partition: the chain reads them in order"
    bodies = [json.loads(m.value) for m in messages]
    assert all(set(b) == {"shop_id", "checkpoint_utc", "sequence", "part", "parts", "updated_products"}
               and b["shop_id"] == "3" and b["part"] == b["parts"] == 1 for b in bodies)
    sequences = [b["sequence"] for b in bodies]
    assert sequences == sorted(set(sequences)), "one sequence per checkpoint, increasing: a consumer drops repeats"
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
    assert meta["messages_sent"] == meta["messages_planned"] > 0, "the partition's own messages, all sent"
    assert len(new_stock_messages(kafka, before)) == meta["messages_sent"] + meta["sent_from_earlier_shifts"]


def test_a_checkpoint_too_big_for_one_message_goes_in_parts_under_the_broker_limit() -> None:
    """100k products changed at one checkpoint: about 1.4 MB as one message, more than Kafka's 1 MB."""
    moment = datetime(2026, 6, 1, 7, 50, tzinfo=UTC)
    levels = {product_id: 1000 + product_id % 7 for product_id in range(1, 100_001)}
    parts = stock_message_parts(4, levels, moment)
    assert len(parts) > 1 and all(len(p.encode()) <= MAX_STOCK_MESSAGE_BYTES for p in parts)
    bodies = [json.loads(p) for p in parts]
    assert [b["part"] for b in bodies] == list(range(1, len(parts) + 1))
    assert {b["parts"] for b in bodies} == {len(parts)} and {b["sequence"] for b in bodies} == {stock_sequence(moment)}
    ids = [int(pid) for b in bodies for pid in b["updated_products"]]
    assert ids == sorted(levels), "consecutive product id ranges, in order, every product once"
    assert {int(k): v for b in bodies for k, v in b["updated_products"].items()} == levels


def topic_copies(kafka: KafkaResource, shop_id: int) -> Counter:
    """(sequence, part, value) of the shop's stock messages on the topic, with how often each is there."""
    with kafka.consumer() as consumer:
        ends = [kafka.watermarks(consumer, STOCK_TOPIC, p) for p in range(3)]
    return Counter((json.loads(m.value)["sequence"], json.loads(m.value)["part"], m.value.decode())
                   for p, (low, high) in enumerate(ends) for m in kafka.read_range(STOCK_TOPIC, p, low, high)
                   if m.key == str(shop_id).encode())


def queued_parts(shops: ShopDatabases, shop_id: int) -> Counter:
    with shops.transaction(shop_id) as conn:
        payloads = conn.scalars(select(StockMessage.payload)).all()
    return Counter((json.loads(p)["sequence"], json.loads(p)["part"], p)
                   for payload in payloads for p in payload.split(PART_SEPARATOR))


@pytest.mark.faults
@pytest.mark.parametrize("loss", ["sigkill", "sigkill-and-data-gone"])
def test_a_broker_killed_right_after_confirming_loses_nothing_and_doubles_nothing(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient, own_broker: LocalBroker,
        loss: str) -> None:
    """noida-db acknowledges before its data is durable: SIGKILL at once after the confirmation may
    lose what it confirmed (with its data directory gone, it surely does). The next stock step reads
    back each confirmed part at its offset and sends again what is missing; nothing is sent twice."""
    kafka = KafkaResource(bootstrap_servers=own_broker.bootstrap_servers, delivery_timeout_seconds=5)
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api, "kafka": kafka}
    materialize_shift(world, shift_of(world), 2, resources, assets=WITH_STOCK)
    own_broker.kill()  # SIGKILL, the moment the step has its confirmations
    if loss == "sigkill-and-data-gone":
        shutil.rmtree(own_broker.data_dir)
    own_broker.start()
    kafka.ensure_topics()
    second = metadata(materialize_shift(world, shift_of(world, index=1), 2, resources, assets=WITH_STOCK),
                      "shift_stock_levels")
    settle_and_verify([2], sqlite_shops, kafka, PROVENANCE, settle_seconds=1.0)
    expected = queued_parts(sqlite_shops, 2)
    assert expected and topic_copies(kafka, 2) == expected, "every part on the topic, exactly once"
    if loss == "sigkill-and-data-gone":
        morning = sum(1 for sequence, _, _ in expected if sequence < stock_sequence(shift_of(world).end) + 1)
        assert second["parts_lost_and_resent"] == morning > 0
    starts = [shift_of(world).start, shift_of(world, index=1).start]
    with sqlite_shops.transaction(2) as conn:
        assert verified_count(conn, starts) == queued(sqlite_shops, 2, sent=True) == len(expected), \
            "each message read back where the broker put it"


@pytest.mark.faults
def test_a_crash_between_the_confirmation_and_its_record_sends_nothing_twice(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient, own_broker: LocalBroker) -> None:
    """The step dies after the broker confirmed its messages and before the shop recorded them: the
    next step finds them on the topic (same shop, sequence, part and bytes) and records them there."""
    kafka = KafkaResource(bootstrap_servers=own_broker.bootstrap_servers, delivery_timeout_seconds=5)
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api, "kafka": kafka}
    materialize_shift(world, shift_of(world), 5, resources, assets=ASSET_NAMES)
    queue_stock_levels(world, world.shop(5), shift_of(world), sqlite_shops)
    with sqlite_shops.transaction(5) as conn:
        parts = unsent_parts(conn)
    sent = kafka.produce_confirmed(Outgoing(STOCK_TOPIC, text.encode(), tag=key, key=b"5") for key, text in parts)
    assert len(sent.confirmed) == len(parts) > 0  # ... and here the process died
    result = materialize_shift(world, shift_of(world), 5, resources, assets=("shift_stock_levels",))
    meta = metadata(result, "shift_stock_levels")
    assert meta["parts_found_already_sent"] == len(parts) and meta["messages_sent"] == 0
    assert set(topic_copies(kafka, 5).values()) == {1}
    assert queued(sqlite_shops, 5, sent=False) == 0


def test_a_run_of_many_shifts_queues_the_messages_each_shift_would_queue_alone(
        world: World, shop_databases: ShopDatabases, sync_api: SyncApiClient) -> None:
    """A run's stock step rolls each shift's opening stock forward from the previous shift's instead of
    reading it from the ledger: the messages are the same as those of each shift queued on its own."""
    resources = {"shop_databases": shop_databases, "sync_api": sync_api}
    shifts = [*shifts_of_day(world, world.start_date), *shifts_of_day(world, world.start_date + timedelta(days=1))]
    for shift in shifts:
        materialize_shift(world, shift, 3, resources, assets=("synced_cache", "shift_deliveries", "shift_transactions"))

    def queue() -> list[tuple]:
        with shop_databases.transaction(3) as conn:
            return conn.execute(select(StockMessage.shift_start, StockMessage.checkpoint, StockMessage.payload)
                                .order_by(StockMessage.checkpoint)).all()

    counts = queue_shifts_stock_levels(world, world.shop(3), reversed(shifts), shop_databases)
    together = queue()
    alone = [queue_stock_levels(world, world.shop(3), shift, shop_databases) for shift in shifts]
    assert list(counts.values()) == alone and all(alone)
    assert together == queue() and len(together) == sum(alone)


def test_every_stock_message_carries_its_provenance_in_headers(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient, own_broker: LocalBroker) -> None:
    """The world, its seed, the scenario the run is under, the shop and the checkpoint's simulated time."""
    kafka = KafkaResource(bootstrap_servers=own_broker.bootstrap_servers)
    before = stock_topic_ends(kafka)
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api, "kafka": kafka,
                 "scenario_ledger": ScenarioLedger(scenario="messy-day")}
    materialize_shift(world, shift_of(world), 2, resources, assets=WITH_STOCK)
    messages = new_stock_messages(kafka, before)
    assert messages
    for message in messages:
        headers = {key: value.decode() for key, value in message.headers}
        assert headers == {"rossmann.world": world_fingerprint(world), "rossmann.seed": "42",
                           "rossmann.scenario": "messy-day", "rossmann.source": "shop 2",
                           "rossmann.simulated_time": json.loads(message.value)["checkpoint_utc"]}


def test_a_run_opens_its_producer_before_its_first_step_and_a_sensor_opens_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka asks for an idempotent producer's id on a 500 ms timer when no broker connection is up
    yet: opened as the run starts, the wait passes during the run's first steps instead of in the step
    that sends the stock levels. A sensor only reads, so its evaluations open none."""
    happened: list[str] = []
    opened = KafkaResource.producer

    def producer(self: KafkaResource, **overrides: object) -> object:
        happened.append("producer opened")
        return opened(self, **overrides)

    monkeypatch.setattr(KafkaResource, "producer", producer)
    # Its own (unreachable) address: no producer of an earlier test is shared with this one.
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:9", delivery_timeout_seconds=1.25)

    @dg.sensor(job_name="first_step_job")
    def reading_sensor(kafka: KafkaResource) -> dg.SkipReason:
        happened.append("sensor evaluated")
        return dg.SkipReason("reads only")

    reading_sensor(dg.build_sensor_context(resources={"kafka": kafka}))
    assert happened == ["sensor evaluated"]

    @dg.op
    def first_step(kafka: KafkaResource) -> None:
        happened.append("first step")

    @dg.job
    def first_step_job() -> None:
        first_step()

    assert first_step_job.execute_in_process(resources={"kafka": kafka}, run_config=QUIET_RUN_CONFIG).success
    assert happened == ["sensor evaluated", "producer opened", "first step"]
