"""Scenarios: seeded, labelled faults on the catalogue stream, and their ledger."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from rossmann_local.defs import build_definitions, default_resources
from rossmann_local.defs.chain import CHAIN_DAY_JOB, CHAIN_LATE_JOB, CHAIN_LATE_STEP
from rossmann_local.defs.scenario_assets import DAY_SENSOR, day_asset
from rossmann_local.defs.streaming import SOLD_AGAIN_SENSOR
from rossmann_local.domain.catalogue import BEGINNING_OF_TIME
from rossmann_local.domain.catalogue_changes import message_key
from rossmann_local.domain.messages import stated_time
from rossmann_local.domain.scenario import (
    BROKER_PAUSE,
    DUPLICATE,
    LATE,
    MALFORMED,
    OUT_OF_ORDER,
    PROMOTION,
    SYNC_API_OUTAGE,
    day_changes,
    plan_day,
)
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.topics import CATALOGUE_TOPICS
from rossmann_local.domain.world import World, reference_world
from rossmann_local.local.chain_admin import make_changes
from rossmann_local.local.day import DayThroughDagster, main
from rossmann_local.local.stack import local_stack
from rossmann_local.reports.schema import DATABASE, TRANSACTIONS
from rossmann_local.resources.catalogue_admin import CatalogueAdmin
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import ConfigError, load_scenario, shipped_scenarios
from rossmann_local.shop.expected_answers import expected_shop, shops_without_their_earlier_days
from rossmann_local.shop_db.history import record_synced, record_versions, shelf_at
from rossmann_local.sync_api.outbox import OutboxRelay
from rossmann_local.sync_api.server import LoopbackServer
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import PROVENANCE, TEST_ADMIN_TOKEN, MadeDay

EXPECTED_LINE = re.compile(r"^Expected answers \(.*\): 5 shops: the reports equal the expected answers$", re.MULTILINE)


def ledger_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM scenario_ledger ORDER BY day, number").fetchall()


def test_the_same_scenario_and_seed_give_the_same_ledger_in_any_order_of_days(tmp_path: Path) -> None:
    world = reference_world()
    scenario = load_scenario("messy-day")
    assert scenario is not None and "messy-day" in shipped_scenarios()
    day = world.start_date
    plan = plan_day(scenario, world, day)
    assert plan == plan_day(scenario, world, day)
    kinds = {e.kind for e in plan.ledger}
    assert kinds == {PROMOTION, LATE, DUPLICATE, OUT_OF_ORDER, MALFORMED}, kinds
    assert [e.number for e in plan.ledger] == list(range(1, len(plan.ledger) + 1))
    other_seed = plan_day(scenario.model_copy(update={"seed": scenario.seed + 1}), world, day)
    assert other_seed.ledger != plan.ledger, "the seed decides the faults"

    asset = day_asset(world, "scenario_ledger")
    days = [day + timedelta(days=n) for n in range(3)]
    written = []
    for name, order in (("forwards", days), ("backwards", days[::-1] + days[:1])):
        ledger = ScenarioLedger(scenario="messy-day", url=f"sqlite:///{tmp_path / name}.sqlite")
        for partition in order:
            assert dg.materialize([asset], partition_key=partition.isoformat(),
                                  resources={"scenario_ledger": ledger}).success
        written.append(ledger_rows(tmp_path / f"{name}.sqlite"))
    assert written[0] == written[1], "a day's ledger is the same whenever and however often it is planned"
    assert {row[0] for row in written[0]} == {d.isoformat() for d in days}


def test_the_same_scenario_gives_the_same_expected_answers_and_the_burst_changes_them() -> None:
    world = reference_world()
    scenario = load_scenario("messy-day")
    assert scenario is not None

    def answers(with_scenario: bool) -> list:
        store = CatalogueStore("sqlite://")
        store.seed(world)
        make_changes(store, plan_day(scenario, world, world.start_date).changes if with_scenario else [])
        categories = store.categories_changed_since(BEGINNING_OF_TIME)
        return [expected_shop(world, shop, [world.start_date], categories,
                              store.products_changed_since(shop.shop_id, BEGINNING_OF_TIME)) for shop in world.shops]

    first = answers(True)
    assert first == answers(True), "the same scenario and seed give the same expected answers"
    plain = answers(False)
    assert [s.days[0].receipts for s in first] == [s.days[0].receipts for s in plain]
    assert [s.days[0].revenue for s in first] != [s.days[0].revenue for s in plain], "the burst cuts prices"
    assert all(s.catalogue and s.days[0].closing_stock > 0 for s in first)


def test_a_bad_scenario_stops_with_a_message_naming_each_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "Messy Day"\nseed = -1\n[duplicates]\nshare = 2\n[malformed]\nrate = 1\n')
    with pytest.raises(ConfigError) as error:
        load_scenario(str(bad))
    message = str(error.value)
    for field in ("name", "seed", "duplicates.share", "malformed.per_hundred", "malformed.rate"):
        assert f"{field}:" in message, message
    with pytest.raises(ConfigError, match="messy-day"):
        load_scenario("no-such-scenario")
    bad.write_text("name = ")
    with pytest.raises(ConfigError, match="is not TOML"):
        load_scenario(str(bad))
    assert load_scenario(None) is None, "no scenario: the world as it is"


@pytest.mark.services  # make day: its local stack and dagster dev
def test_a_messy_day_dead_letters_exactly_its_malformed_messages_and_the_reports_still_reconcile(
        messy_day: MadeDay, monkeypatch: pytest.MonkeyPatch) -> None:
    out = messy_day.out  # make day --scenario messy-day
    counts = re.search(r"^Scenario messy-day \(seed 69\): the day's ledger \(.*\): promotion (\d+), late (\d+), "
                       r"duplicate (\d+), out_of_order (\d+), malformed (\d+), sync_api_outage 0, broker_pause 0$",
                       out, re.MULTILINE)
    assert counts, out
    promotions, late, duplicates, out_of_order, malformed = map(int, counts.groups())
    assert promotions and late and duplicates and out_of_order and malformed
    resold = re.search(r"late for shifts already sold: (\d+) \(shop x shifts sold again: (\d+)\)", out)
    assert resold and int(resold[1]) > 0 and int(resold[2]) >= int(resold[1]), "late changes make shifts sold again"
    assert f"dead-lettered: {malformed}," in out, "each malformed message is set aside, and only those"
    assert f"(+{duplicates + out_of_order + malformed} faulty messages of the scenario)" in out
    assert re.search(r"^all\s+(\d+)\s+\1\s+([\d,.]+)\s+\2\s+(\d+)\s+\3\s+yes\s", out, re.MULTILINE), out
    assert EXPECTED_LINE.search(out), "the reports equal the expected answers despite the faults"
    rows = ledger_rows(messy_day.data / "scenario_ledger.sqlite")
    assert len(rows) == promotions + late + duplicates + out_of_order + malformed
    assert {row[0] for row in rows} == {date(2026, 6, 1).isoformat()}
    assert any(row[4] == OUT_OF_ORDER and "after the description" in row[8] for row in rows), "one across topics"

    # The check on the expected answers fails when a report row goes missing.
    monkeypatch.setenv("ROSSMANN_DATA_DIR", str(messy_day.data))
    world = reference_world()
    with local_stack(world) as stack:
        expected, day = day_asset(world, "expected_answers"), world.start_date.isoformat()
        resources = {"sync_api": stack.sync_api, "clickhouse": stack.clickhouse,
                     "shop_databases": stack.shop_databases}

        def verdict() -> dg.AssetCheckEvaluation:
            result = dg.materialize([expected], partition_key=day, resources=resources)
            [evaluation] = result.get_asset_check_evaluations()
            return evaluation

        assert verdict().passed
        with stack.clickhouse.client() as client:
            client.command(f"DELETE FROM {DATABASE}.{TRANSACTIONS} WHERE item_id = (SELECT max(item_id) FROM "
                           f"{DATABASE}.{TRANSACTIONS} WHERE shop_id = 2)")
        failed = verdict()
        assert not failed.passed and failed.description == "1 of 5 shops differ from the expected answers"
        assert set(failed.metadata["differing"].value) == {"shop 2"}, failed.metadata


@pytest.mark.services  # make day: its local stack and dagster dev
def test_an_outage_is_ridden_out_and_the_reports_still_equal_the_expected_answers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scenario", "outage"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Scenario outage \(seed 23\): .*: promotion 0, late 0, duplicate 0, out_of_order 0, "
                     r"malformed 0, sync_api_outage 1, broker_pause 1$", out, re.MULTILINE), out
    assert "the Sync API refused 1 sync request(s) (503); the shops' sync retried" in out
    assert "the broker paused for 2 s of wall time before the shift of 15:00" in out
    assert re.search(r"^all\s+10/10\s", out, re.MULTILINE), "every shift ran"
    assert EXPECTED_LINE.search(out), out
    kinds = [row[4] for row in ledger_rows(tmp_path / "data" / "scenario_ledger.sqlite")]
    assert kinds == [SYNC_API_OUTAGE, BROKER_PAUSE]


@pytest.mark.services  # make day: its local stack and dagster dev
def test_a_chain_that_does_not_sell_again_the_shifts_a_late_change_fell_into_fails_the_expected_answers(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the expected answers are for: the late changes arrive and are applied, but the shifts
    they fall into keep the receipts sold before; the reports still reconcile with the shop databases
    (both are wrong alike), and only the expected answers tell."""
    def switched_off(chain: DayThroughDagster, sensor: str, timeout: float = 120) -> str:
        """The sold-again sensor switched off in the UI before the late changes arrive."""
        cursor = watching(chain, sensor, timeout)
        if sensor == SOLD_AGAIN_SENSOR:
            chain.ui.stop_sensor(sensor)
        return cursor

    watching = DayThroughDagster.wait_until_watching
    monkeypatch.setattr(DayThroughDagster, "wait_until_watching", switched_off)
    assert main(["--scenario", "messy-day"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^all\s+(\d+)\s+\1\s+([\d,.]+)\s+\2\s+(\d+)\s+\3\s+yes\s", out, re.MULTILINE), \
        "the reports equal the shop databases"
    assert re.search(r"^Expected answers \(.*\): FAILED: \d of 5 shops differ from the expected answers$", out,
                     re.MULTILINE), out
    assert re.search(r"[1-9]\d* sold shop x shifts a late version fell into were not sold again: sold_again_sensor "
                     r"is switched off", out), out


def test_a_day_run_without_the_days_before_it_is_not_compared_as_a_failure(tmp_path: Path) -> None:
    """The expected answers assume the days ran in order from the world's first; a shop whose
    database lacks them opened its day with other stock, and the check says so instead of failing."""
    world = reference_world()
    shops = ShopDatabases(sqlite_dir=str(tmp_path / "shops"))
    try:
        assert shops_without_their_earlier_days(world, world.start_date, shops) == []
        assert shops_without_their_earlier_days(world, world.start_date + timedelta(days=1), shops) == \
            [s.shop_id for s in world.shops]
    finally:
        shops.dispose()


def test_a_price_entered_late_for_the_moment_a_description_changed_takes_its_place(tmp_path: Path) -> None:
    """Found by the expected answers: a sync at the moment a product's description changed used to
    record the price in effect then as a version of that moment, so the price the chain entered late
    for the same moment found its place taken, and the shifts were sold again at the old price."""
    world = reference_world()
    store = CatalogueStore("sqlite://")
    store.seed(world)
    shop, at = world.shops[0], shifts_of_day(world, world.start_date)[1].start
    store.update_product(7, description="now in a larger pack", at=at)
    shops = ShopDatabases(sqlite_dir=str(tmp_path / "shops"))
    try:
        with shops.transaction(shop.shop_id) as conn:
            record_synced(conn, shop.city, store.categories_changed_since(BEGINNING_OF_TIME),
                          store.products_changed_since(shop.shop_id, BEGINNING_OF_TIME))
        store.set_price(7, shop.city, Decimal("1.23"), Decimal("0"), at=at)  # entered late, for that moment
        late = [r for r in store.products_changed_since(shop.shop_id, BEGINNING_OF_TIME)
                if r.product_id == 7 and r.updated_at_utc == at]
        with shops.transaction(shop.shop_id) as conn:
            recorded = record_versions(conn, shop.city, prices=late)  # as a streamed price message is recorded
            on_sale = {p.product_id: p.price for p in shelf_at(conn, at)}
        assert recorded.added == 1 and on_sale[7] == Decimal("1.23")
    finally:
        shops.dispose()


def test_the_day_sensor_asks_for_a_days_answers_once_every_report_of_the_day_is_in(
        world: World, kafka: KafkaResource, sqlite_shops: ShopDatabases) -> None:
    """Under the daemon the expected answers and the ledger follow the shifts: once both reports of
    every shop x shift of a day are materialized, one run for that day; never before, never twice."""
    defs = build_definitions(world, resources={**default_resources(), "kafka": kafka, "shop_databases": sqlite_shops})
    sensor = defs.resolve_sensor_def(DAY_SENSOR)
    keys = [f"2026-06-01-{start}|{shop}" for start in ("09:00", "15:00") for shop in "12345"]
    with dg.instance_for_test() as instance:
        def tick(cursor: str | None) -> Any:  # a SensorResult, or a SkipReason while the day is not reported
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=dict(defs.resources),
                                         repository_def=defs.get_repository_def()) as context:
                return sensor(context)

        def report(asset: str, partitions: list[str]) -> None:
            for key in partitions:
                instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=key))

        switched_on = tick(None)
        assert not switched_on.run_requests and switched_on.cursor == "2026-05-31", "from the first day on"
        report("transactions_report", keys)
        report("delivery_report", keys[:-1])
        assert isinstance(tick(switched_on.cursor), dg.SkipReason), "shop 5's afternoon delivery report is missing"
        report("delivery_report", keys[-1:])
        result = tick(switched_on.cursor)
        [request] = result.run_requests
        assert (request.partition_key, request.run_key, result.cursor) == ("2026-06-01", "day 2026-06-01",
                                                                           "2026-06-01")
        assert {k.to_user_string() for k in sensor.asset_selection.resolve(defs.resolve_asset_graph())} == {
            "scenario_ledger", "expected_answers"}
        assert isinstance(tick(result.cursor), dg.SkipReason), "the next day's reports are not in"
        assert tick(None).cursor == "2026-06-01", "switched on later, it starts after the days already reported"


def test_the_chain_day_job_enters_the_days_changes_through_the_sync_apis_admin_endpoints(
        world: World, store: CatalogueStore, sync_server: LoopbackServer) -> None:
    """The chain's day of catalogue changes is a Dagster job a schedule, a sensor or a user runs: its
    changes reach the Sync API (and its outbox for Kafka) exactly as make day enters them in the
    stand-in; a wrong admin token fails the run with a message that names the setting."""
    day = world.start_date
    changes = day_changes(None, world, day)
    expected = {(c.topic, c.key, c.at.astimezone(UTC)) for c in changes}

    def run(token: str) -> dg.ExecuteInProcessResult:
        admin = CatalogueAdmin(base_url=sync_server.url, admin_token=token)
        job = build_definitions(world, {**default_resources(), "catalogue_admin": admin}).resolve_job_def(CHAIN_DAY_JOB)
        return job.execute_in_process(partition_key=day.isoformat(), raise_on_error=False)

    refused = run("not-the-token")
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    assert "401" in failure.step_failure_data.error.message and "ROSSMANN_SYNC_API_ADMIN_TOKEN" in \
        failure.step_failure_data.error.message
    assert store.unpublished() == [], "nothing entered"
    entered = run(TEST_ADMIN_TOKEN)
    assert entered.success and entered.output_for_node("enter_the_days_catalogue_changes") == len(changes) > 0
    published = {(topic, message_key(topic, payload), at.astimezone(UTC))
                 for topic, payload, at in store.messages_effective_between(min(c.at for c in changes),
                                                                            max(c.at for c in changes))}
    assert expected <= published


def test_the_chain_day_job_delivers_a_scenarios_stream_faults_from_what_the_sync_api_published(
        world: World, store: CatalogueStore, sync_server: LoopbackServer, kafka: KafkaResource) -> None:
    """Under a scenario the job also delivers its faults, made of the messages the Sync API published
    for the day's changes (found on Kafka, so any Sync API with an outbox will do): each duplicate and
    older version is its original again, byte for byte; each malformed one is spoiled; all are keyed
    like the original and name their ledger entry."""
    day = world.start_date
    scenario = load_scenario("messy-day")
    assert scenario is not None
    plan = plan_day(scenario, world, day)
    marks = {key: high for key, (_low, high) in kafka.topic_watermarks(CATALOGUE_TOPICS).items()}
    resources = {**default_resources(), "kafka": kafka, "scenario_ledger": ScenarioLedger(scenario="messy-day"),
                 "catalogue_admin": CatalogueAdmin(base_url=sync_server.url, admin_token=TEST_ADMIN_TOKEN)}
    with OutboxRelay(store, kafka, PROVENANCE):  # the stand-in publishing its outbox, as a Sync API does
        result = build_definitions(world, resources).resolve_job_def(CHAIN_DAY_JOB).execute_in_process(
            partition_key=day.isoformat())
    assert result.success
    records = [m for (topic, partition), (_low, high) in kafka.topic_watermarks(CATALOGUE_TOPICS).items()
               for m in kafka.read_range(topic, partition, marks[topic, partition], high)]
    faults = {dict(m.headers)[b"rossmann.fault".decode()].decode(): m for m in records
              if "rossmann.fault" in dict(m.headers)}
    assert sorted(faults) == sorted(f"{f.entry.kind} ({f.entry.day} #{f.entry.number})" for f in plan.faults)
    published = {(m.topic, m.key): m.value for m in records if "rossmann.fault" not in dict(m.headers)}
    for fault in plan.faults:
        record = faults[f"{fault.entry.kind} ({fault.entry.day} #{fault.entry.number})"]
        assert record.key == fault.entry.key.encode()
        original = published[(record.topic, record.key)] if fault.entry.kind != "out_of_order" else None
        if fault.entry.kind == "duplicate":
            assert record.value == original, "a duplicate is its original, byte for byte"
        elif fault.entry.kind == "malformed":
            assert record.value != original
    assert result.output_for_node("enter_the_days_catalogue_changes") == len(plan.changes), "all but the late ones"
    assert len(plan.changes) + len(plan.late) == len(day_changes(scenario, world, day)) and plan.late


def test_a_days_late_changes_are_a_job_and_its_answers_wait_for_them(
        world: World, store: CatalogueStore, sync_server: LoopbackServer, kafka: KafkaResource,
        sqlite_shops: ShopDatabases) -> None:
    """A scenario's late changes are entered by their own job once the day's shifts are sold, dated
    when they took effect, and are on Kafka when it ends; until that job has run, the day sensor
    does not check the day (its answers would lack them)."""
    day = world.start_date
    scenario = load_scenario("messy-day")
    assert scenario is not None
    late = plan_day(scenario, world, day).late
    resources = {**default_resources(), "kafka": kafka, "shop_databases": sqlite_shops,
                 "scenario_ledger": ScenarioLedger(scenario="messy-day"),
                 "catalogue_admin": CatalogueAdmin(base_url=sync_server.url, admin_token=TEST_ADMIN_TOKEN)}
    defs = build_definitions(world, resources)
    sensor = defs.resolve_sensor_def(DAY_SENSOR)
    keys = [f"2026-06-01-{start}|{shop}" for start in ("09:00", "15:00") for shop in "12345"]
    marks = {key: high for key, (_low, high) in kafka.topic_watermarks(CATALOGUE_TOPICS).items()}
    with dg.instance_for_test() as instance:
        def tick(cursor: str | None) -> Any:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=dict(defs.resources),
                                         repository_def=defs.get_repository_def()) as context:
                return sensor(context)

        switched_on = tick(None)
        for asset in ("transactions_report", "delivery_report"):
            for key in keys:
                instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=key))
        held = tick(switched_on.cursor)
        assert isinstance(held, dg.SkipReason) and CHAIN_LATE_JOB in (held.skip_message or "")
        with OutboxRelay(store, kafka, PROVENANCE):
            result = defs.resolve_job_def(CHAIN_LATE_JOB).execute_in_process(partition_key=day.isoformat(),
                                                                              instance=instance)
        assert result.success and result.output_for_node(CHAIN_LATE_STEP) == len(late) > 0
        records = [m for (topic, partition), (_low, high) in kafka.topic_watermarks(CATALOGUE_TOPICS).items()
                   for m in kafka.read_range(topic, partition, marks[topic, partition], high)]
        on_kafka = {(m.topic, m.key.decode(), stated_time(m.value)) for m in records if m.key}
        assert {(c.topic, c.key, c.at.astimezone(UTC)) for c in late} <= on_kafka, "published when the job ends"
        [request] = tick(switched_on.cursor).run_requests
        assert request.partition_key == day.isoformat()
