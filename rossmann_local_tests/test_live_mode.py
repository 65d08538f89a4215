"""Live mode (``make live``): receipts written as their simulated time arrives, stopped and resumed,
ending with exactly a backfill's rows; its runs visible in the Dagster UI while the shift is open."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import dagster as dg
import httpx
import pytest
from sqlalchemy import select

from rossmann_local.defs import SHOP_SHIFT_JOB, build_definitions
from rossmann_local.defs.chain import CHAIN_DAY_JOB
from rossmann_local.defs.live import (
    LIVE_CLOCK_JOB,
    LIVE_SALES_JOB,
    LIVE_SENSOR,
    LIVE_STEP_TAG,
    LIVE_UNTIL_TAG,
    session_start,
)
from rossmann_local.domain.clock import (
    DEFAULT_MAX_EVENTS_PER_SECOND,
    LiveClock,
    events_per_simulated_second,
    next_shift,
    shift_at_or_after,
)
from rossmann_local.domain.topics import CATALOGUE_TOPICS, PRODUCT_TOPIC
from rossmann_local.domain.world import World, reference_world
from rossmann_local.local.chain_admin import inject_malformed_message
from rossmann_local.local.dagster_ui import running_dev
from rossmann_local.local.instance import managed_instance
from rossmann_local.local.processes import free_port
from rossmann_local.local.stack import local_stack
from rossmann_local.resources.catalogue_admin import CatalogueAdmin
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.live_clock import LiveClockFile, LiveClockState
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError, load_world
from rossmann_local.shop.catalogue import apply_catalogue_ranges
from rossmann_local.shop.shift import next_live_sale, sell_shift, take_deliveries, write_live_sales
from rossmann_local.shop.sync import sync_cache
from rossmann_local.shop_db.cache import advance_catalogue_offsets
from rossmann_local.shop_db.models import Transaction, TransactionItem
from rossmann_local.sync_api.server import LoopbackServer
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import PROVENANCE, TEST_ADMIN_TOKEN, MadeDay
from rossmann_local_tests.dagster_dev import dev_environment
from rossmann_local_tests.helpers import receipts_of, shift_of, stock_and_ledger
from rossmann_local_tests.in_process import run_shifts

pytestmark = pytest.mark.services  # a command's local stack, dagster dev or a broker

ROOT = Path(__file__).resolve().parents[1]
SHOPS = 2


def live_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "KAFKA_BOOTSTRAP_SERVERS")}
    env = {k: v for k, v in env.items() if not k.startswith("ROSSMANN_") or k == "ROSSMANN_TEST_PG_URL"}
    env.update(ROSSMANN_DATA_DIR=str(data), ROSSMANN_SHOP_COUNT=str(SHOPS), TZ="UTC")
    return env


def start_live(data: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    # The UI's port and the stand-in's: 3000 and 8765 may be taken, by another worker's test too (one of
    # them holds 8765 on purpose).
    if "--port" not in args:
        args = (*args, "--port", str(free_port()))
    if "--sync-api-port" not in args:
        args = (*args, "--sync-api-port", str(free_port()))
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "rossmann_local.local.live_command", *args], env=live_env(data),
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def stopped_at_the_end(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def shift_state(data: Path, shop_id: int) -> tuple[int, bool]:
    """(receipts in the shop's database, whether a shift's sales are recorded), read as a user would."""
    path = data / "shops" / f"shop_{shop_id}.sqlite"
    if not path.exists():
        return 0, False
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        try:
            receipts = db.execute("SELECT count(*) FROM transactions").fetchone()[0]
            closed = db.execute("SELECT count(*) FROM shifts WHERE sales_recorded_at_utc IS NOT NULL").fetchone()[0]
        except sqlite3.OperationalError:  # the tables are not there yet
            return 0, False
    return receipts, bool(closed)


def wait_for(what: str, condition, process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"live mode exited with {process.returncode} before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def test_the_live_clock_maps_wall_time_onto_simulated_time() -> None:
    world = reference_world()
    opening = shift_of(world).start
    wall = datetime(2030, 1, 1, tzinfo=UTC)
    clock = LiveClock(opening, wall, speed=60)
    assert clock.sim(wall + timedelta(minutes=1)) == opening + timedelta(hours=1)
    assert clock.wall(opening + timedelta(hours=6)) == wall + timedelta(minutes=6)
    assert shift_at_or_after(world, opening - timedelta(hours=3)) == shift_of(world)
    assert shift_at_or_after(world, opening + timedelta(hours=13)) == shift_of(world, world.start_date + timedelta(1))
    assert next_shift(world, shift_of(world)) == shift_of(world, index=1)
    with pytest.raises(ValueError, match="speed"):
        LiveClock(opening, wall, speed=0)


def test_live_mode_keeps_under_its_ceiling_of_events_per_second(tmp_path: Path, sqlite_shops: ShopDatabases) -> None:
    """A speed that would send more receipts and stock messages per wall second than the ceiling is
    lowered to the fastest that stays within it; a slow one is kept; a ceiling of 0 names the option."""
    world = reference_world(shop_count=100)
    clock_file = LiveClockFile(path=str(tmp_path / "clock.json"))
    rate = events_per_simulated_second(world)
    assert rate == pytest.approx(300 / 300 + 100 / 3000), "300 terminals, a customer each 5 min; 100 shops' stock"
    fast = session_start(world, clock_file, sqlite_shops, None, 3600.0, None, max_events_per_second=50)
    assert fast.speed * rate == pytest.approx(50) and fast.speed < 3600
    slow = session_start(world, clock_file, sqlite_shops, None, 10.0, None, max_events_per_second=50)
    assert slow.speed == 10.0
    assert session_start(world, clock_file, sqlite_shops, None, None, None).speed * rate <= \
        DEFAULT_MAX_EVENTS_PER_SECOND, "the default ceiling holds the default speed too"
    with pytest.raises(ConfigError, match="--max-events-per-second must be above 0"):
        session_start(world, clock_file, sqlite_shops, None, 60.0, None, max_events_per_second=0)


def test_live_sales_written_in_pieces_are_the_shifts_receipts_row_for_row(
        shop_databases: ShopDatabases, sync_api: SyncApiClient, world: World, tmp_path: Path) -> None:
    """The unit of work: the prefix up to each moment, then the shift's end, leaves exactly what one
    whole sale leaves in another database, and the end keeps every live receipt."""
    shift, shop = shift_of(world), world.shops[0]
    reference = ShopDatabases(sqlite_dir=str(tmp_path / "reference"))
    for databases in (shop_databases, reference):
        sync_cache(shop, databases, sync_api, shift.start)
        take_deliveries(world, shop, shift, databases)
    whole = sell_shift(world, shop, shift, reference)

    written, times = 0, []
    for hours in (1, 2.5, 2.5, 4):  # the same moment twice writes nothing the second time
        live = write_live_sales(world, shop, shift, shift.start + timedelta(hours=hours), shop_databases)
        assert all(r.transaction_time < live.until for r in whole.sales.receipts[:live.receipts_so_far])
        written += live.stored.written
        if live.written_from:
            times.append((live.written_from, live.written_to))
        assert live.stored.replaced == 0
    assert written == sum(1 for r in whole.sales.receipts if r.transaction_time < shift.start + timedelta(hours=4))
    assert all(a[1] < b[0] for a, b in pairwise(times)), "each batch follows the last in time"
    closed = sell_shift(world, shop, shift, shop_databases)
    assert (closed.stored.kept, closed.stored.replaced) == (written, 0)
    assert closed.stored.kept + closed.stored.written == len(whole.sales.receipts)
    assert receipts_of(shop_databases, shop.shop_id) == receipts_of(reference, shop.shop_id)
    again = sell_shift(world, shop, shift, shop_databases)
    assert (again.stored.kept, again.stored.written, again.stored.replaced) == (len(whole.sales.receipts), 0, 0)
    kept, summed = stock_and_ledger(shop_databases, shop.shop_id)
    assert kept == summed and kept, "the stock each write kept is the ledger's sum"


def test_a_change_that_reaches_the_shop_after_its_live_receipts_rewrites_them_at_the_shifts_end(
        shop_databases: ShopDatabases, store: CatalogueStore, sync_api: SyncApiClient, world: World,
        tmp_path: Path) -> None:
    """A price change dated 10:00 that the shop learns of after it wrote its receipts up to 13:00:
    the shift's end rewrites from the first receipt that differs, says how many, and leaves what a
    shop that knew of the change from the start sells."""
    shift, shop = shift_of(world), world.shops[0]
    reference = ShopDatabases(sqlite_dir=str(tmp_path / "reference"))
    for databases in (shop_databases, reference):
        sync_cache(shop, databases, sync_api, shift.start)
        take_deliveries(world, shop, shift, databases)
    live = write_live_sales(world, shop, shift, shift.start + timedelta(hours=4), shop_databases)
    regular = next(p for p in world.products if p.product_id == PRODUCT).prices[shop.city]
    store.set_price(PRODUCT, shop.city, Decimal(NEW_PRICE), regular.discount, at=shift.start + timedelta(hours=1))
    for databases in (shop_databases, reference):
        sync_cache(shop, databases, sync_api, shift.start)
    closed = sell_shift(world, shop, shift, shop_databases)
    assert 0 < closed.stored.replaced <= live.receipts_so_far, "the receipts from the first one it concerns"
    assert closed.stored.kept == live.receipts_so_far - closed.stored.replaced
    sell_shift(world, shop, shift, reference)
    assert receipts_of(shop_databases, shop.shop_id) == receipts_of(reference, shop.shop_id)
    take_deliveries(world, shop, shift, shop_databases)  # a re-run of the deliveries replaces them
    kept, summed = stock_and_ledger(shop_databases, shop.shop_id)
    assert kept == summed == stock_and_ledger(reference, shop.shop_id)[0], "rewritten receipts gave their stock back"
    reference.dispose()


def live_sales_batches(instance: dg.DagsterInstance) -> list[tuple[datetime, list[dict]]]:
    """(until, per-shop rows) of every live sales run that wrote something, in the order they ran: the
    run that opens the shift sells up to its moment too (it writes receipts when it starts late)."""
    batches = []
    for run in reversed(instance.get_runs(dg.RunsFilter(tags={LIVE_STEP_TAG: ["open", "sales"]}))):
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
        [output] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
        table = output.dagster_event.event_specific_data.metadata["per_shop"]
        rows = [record.data for record in table.records]
        if any(row["written"] for row in rows):
            batches.append((datetime.fromisoformat(run.tags[LIVE_UNTIL_TAG]), rows))
    return batches


def test_live_mode_stopped_and_restarted_ends_with_a_backfills_rows(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data, log = tmp_path / "live", tmp_path / "live.log"
    args = ("--speed", "240", "--stop-at", "2026-06-01T15:00")  # 6 simulated hours in 90 s
    with stopped_at_the_end(start_live(data, log, *args)) as first:
        wait_for("receipts", lambda: shift_state(data, 1)[0] >= 30, first, log)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, log.read_text()[-3000:]
    stopped = [shift_state(data, shop) for shop in range(1, SHOPS + 1)]
    assert all(receipts and not closed for receipts, closed in stopped), f"stopped inside the shift: {stopped}"
    assert "stopped by SIGTERM" in log.read_text()

    with stopped_at_the_end(start_live(data, log, *args)) as second:  # no --start: it resumes
        assert second.wait(timeout=180) == 0, log.read_text()[-3000:]
    out = log.read_text()
    assert "shift 2026-06-01 09:00-15:00 closed" in out, out[-3000:]
    assert out.count("shift 2026-06-01 09:00-15:00 open") == 1, "the restart found the shift open"

    monkeypatch.setenv("ROSSMANN_SHOP_COUNT", str(SHOPS))
    world = load_world()
    shift = shift_of(world)
    live_shops = ShopDatabases(sqlite_dir=str(data / "shops"))
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))  # its dagster.yaml names its storage by it
    with dg.DagsterInstance.get() as instance:
        batches = live_sales_batches(instance)
        closes = instance.get_runs(dg.RunsFilter(tags={LIVE_STEP_TAG: "close"}))
        [close] = closes
        events = instance.get_records_for_run(close.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    assert len(batches) >= 3, f"the receipts came in several batches: {len(batches)}"
    untils = [until for until, _ in batches]
    assert untils == sorted(untils) and untils[-1] < shift.end
    live_written = {shop.shop_id: 0 for shop in world.shops}
    last_time: dict[int, str] = {}
    for until, rows in batches:
        for row in rows:
            if row["written"]:
                assert row["first"] > last_time.get(row["shop_id"], ""), "each batch follows the last in time"
                last_time[row["shop_id"]] = row["last"]
                # receipts have whole seconds, the clock's "now" has fractions: last < until, to the second
                assert row["last"] <= until.astimezone(shift.start.tzinfo).strftime("%H:%M:%S")
                live_written[row["shop_id"]] += row["written"]
    kept = {}
    for record in events:
        materialization = record.event_log_entry.dagster_event.event_specific_data.materialization
        if materialization.asset_key == dg.AssetKey("shift_transactions"):
            figures = {k: v.value for k, v in materialization.metadata.items()}
            kept[int(materialization.partition.split("|")[1])] = (figures["receipts_already_written"],
                                                                   figures["receipts_rewritten"])
    assert kept == {shop: (count, 0) for shop, count in live_written.items()}, \
        "the shift's end kept every receipt written live and rewrote none"

    # The same partitions backfilled in a fresh data directory.
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.setenv("ROSSMANN_DATA_DIR", str(tmp_path / "backfill"))
    with local_stack(world, command="the test's backfill") as stack:
        definitions = build_definitions(world, stack.resources)
        result = run_shifts(definitions.resolve_job_def(SHOP_SHIFT_JOB), managed_instance(), world, shift, shift)
        assert result.success
        for shop in world.shops:
            rows = receipts_of(stack.shop_databases, shop.shop_id)
            assert rows, "the backfill sold the shift"
            assert receipts_of(live_shops, shop.shop_id) == rows, f"shop {shop.shop_id}: live rows == backfill rows"
        stack.shop_databases.dispose()
    live_shops.dispose()


def test_the_ui_shows_the_live_runs_while_the_shift_is_open(tmp_path: Path) -> None:
    data, log = tmp_path / "live", tmp_path / "live.log"
    with socket_port() as port, stopped_at_the_end(
            start_live(data, log, "--speed", "120", "--port", str(port))) as live:
        url = f"http://127.0.0.1:{port}/graphql"
        query = """query($filter: RunsFilter) { runsOrError(filter: $filter) {
            ... on Runs { results { runId status tags { key value } } } } }"""

        def live_runs() -> list[dict]:
            try:
                answer = httpx.post(url, timeout=10, json={"query": query, "variables": {"filter": {
                    "tags": [{"key": LIVE_STEP_TAG, "value": "sales"}]}}})
                return answer.json()["data"]["runsOrError"]["results"]
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                return []

        seen: list[list[dict]] = []

        def runs_listed(more_than: int) -> bool:
            seen.append(live_runs())
            return len(seen[-1]) > more_than

        wait_for("receipts", lambda: shift_state(data, 1)[0] > 0, live, log, timeout=240)
        wait_for("live runs in the UI", lambda: runs_listed(0), live, log)
        first_view = len(seen[-1])
        wait_for("more live runs in the UI", lambda: runs_listed(first_view), live, log)
        # A run the sensor just asked for is listed before the daemon starts it (NOT_STARTED).
        wait_for("two live runs finished", lambda: runs_listed(0) and sum(
            run["status"] in ("SUCCESS", "FAILURE") for run in seen[-1]) >= 2, live, log)
        receipts, closed = shift_state(data, 1)
        assert not closed, "the shift is still open while the UI lists its live runs"
        assert receipts > 0
        statuses = [run["status"] for run in seen[-1]]
        assert "FAILURE" not in statuses and statuses.count("SUCCESS") >= 2, statuses  # one may be running now
        untils = sorted(next(t["value"] for t in run["tags"] if t["key"] == LIVE_UNTIL_TAG) for run in seen[-1])
        assert len(set(untils)) == len(untils) >= 2, "each run wrote up to a later simulated time"


@contextlib.contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


def test_a_price_changed_during_the_live_shift_takes_effect_at_the_clocks_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change made by hand (the stand-in's CLI, no --at) while the shift is open takes effect at the
    live clock's simulated time: the receipts before it keep the old price, those after it charge the
    new one, none written live is rewritten at the shift's end, and a backfill given the same change
    at the same time writes the same rows."""
    data, log = tmp_path / "live", tmp_path / "live.log"
    with socket_port() as port, stopped_at_the_end(start_live(
            data, log, "--speed", "360", "--stop-at", "2026-06-01T15:00",
            "--sync-api-port", str(port))) as live:
        wait_for("receipts", lambda: shift_state(data, 1)[0] >= 20, live, log)
        env = {**live_env(data), "ROSSMANN_SYNC_API_URL": f"http://127.0.0.1:{port}"}
        change = subprocess.run([sys.executable, "-m", "rossmann_local.sync_api", "change", "price", "--product",
                                 str(PRODUCT), "--city", "Berlin", "--price", NEW_PRICE], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert change.returncode == 0, change.stdout + change.stderr
        effective = datetime.fromisoformat(json.loads(change.stdout.split(" ", 1)[1])["updated_at_utc"])
        assert live.wait(timeout=180) == 0, log.read_text()[-3000:]

    monkeypatch.setenv("ROSSMANN_SHOP_COUNT", str(SHOPS))
    world = load_world()
    shift = shift_of(world)
    assert shift.start < effective < shift.end, "the change is dated on the live clock, inside the shift"
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    with dg.DagsterInstance.get() as instance:
        [close] = instance.get_runs(dg.RunsFilter(tags={LIVE_STEP_TAG: "close"}))
        records = instance.get_records_for_run(close.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    rewritten = [m.metadata["receipts_rewritten"].value for m in (
        r.event_log_entry.dagster_event.event_specific_data.materialization for r in records.records)
        if m.asset_key == dg.AssetKey("shift_transactions")]
    assert rewritten == [0] * SHOPS, "no receipt written live had to be rewritten"
    live_shops = ShopDatabases(sqlite_dir=str(data / "shops"))
    charged = prices_charged(live_shops, 1, effective)
    assert charged["after"] == {Decimal(NEW_PRICE)}, charged
    assert charged["before"] and Decimal(NEW_PRICE) not in charged["before"], charged

    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.setenv("ROSSMANN_DATA_DIR", str(tmp_path / "backfill"))
    with local_stack(world, command="the test's backfill") as stack:
        assert stack.store is not None
        regular = next(p for p in world.products if p.product_id == PRODUCT).prices["Berlin"]
        stack.store.set_price(PRODUCT, "Berlin", Decimal(NEW_PRICE), regular.discount, at=effective)
        result = run_shifts(build_definitions(world, stack.resources).resolve_job_def(SHOP_SHIFT_JOB),
                            managed_instance(), world, shift, shift)
        assert result.success
        for shop in world.shops:
            assert receipts_of(live_shops, shop.shop_id) == receipts_of(stack.shop_databases, shop.shop_id)
        stack.shop_databases.dispose()
    live_shops.dispose()


PRODUCT, NEW_PRICE = 1, "1.99"


def prices_charged(shops: ShopDatabases, shop_id: int, effective: datetime) -> dict[str, set[Decimal]]:
    """The unit prices the shop's receipts charged for PRODUCT before and after ``effective``."""
    with shops.transaction(shop_id) as conn:
        rows = conn.execute(select(Transaction.transaction_time, TransactionItem.unit_price)
                            .join(TransactionItem, TransactionItem.transaction_id == Transaction.transaction_id)
                            .where(TransactionItem.product_id == PRODUCT)).all()
    return {"before": {price for at, price in rows if at < effective},
            "after": {price for at, price in rows if at >= effective}}


def test_the_live_sensor_opens_sells_and_closes_the_shift_as_the_clock_passes(
        world: World, shop_databases: ShopDatabases, sync_api: SyncApiClient, kafka: KafkaResource,
        clickhouse: ClickHouseReports, tmp_path: Path) -> None:
    """Each tick requests the one next step for the simulated now it reads: nothing before the shops
    open, the shift's start, sales only once a receipt is due, the shift's end once it is over."""
    shift = shift_of(world)
    clock_file = LiveClockFile(path=str(tmp_path / "clock.json"))
    admin = CatalogueAdmin(base_url=sync_api.base_url, admin_token=TEST_ADMIN_TOKEN)
    definitions = build_definitions(world, {"shop_databases": shop_databases, "sync_api": sync_api,
                                            "kafka": kafka, "clickhouse": clickhouse, "live_clock": clock_file,
                                            "catalogue_admin": admin})
    sensor = definitions.resolve_sensor_def(LIVE_SENSOR)
    cursor: list[str | None] = [None]

    def tick(at: datetime) -> dg.RunRequest | str:
        pinned = LiveClockFile(path=clock_file.path, pinned_sim_utc=at.isoformat())
        with dg.build_sensor_context(instance=instance, cursor=cursor[0],
                                     resources={"live_clock": pinned, "shop_databases": shop_databases,
                                                "kafka": kafka, "scenario_ledger": ScenarioLedger()}) as context:
            result = sensor(context)
        if isinstance(result, dg.SkipReason):
            return result.skip_message or ""
        cursor[0] = result.cursor or cursor[0]
        [request] = result.run_requests
        return request

    with dg.instance_for_test() as instance:
        assert "not running" in tick(shift.start)
        state = LiveClockState(speed=60, sim_at=shift.start, wall_at=datetime.now(UTC), first_shift=shift.start,
                               sim_reached=shift.start, running=True, chain_changes=False)
        clock_file.write(state)
        assert "open at" in tick(shift.start - timedelta(minutes=5)), "a Sync API with its own admin side"
        clock_file.write(state.model_copy(update={"chain_changes": True}))
        chain_day = tick(shift.start - timedelta(minutes=5))
        assert (chain_day.job_name, chain_day.partition_key, chain_day.tags[LIVE_STEP_TAG]) == (
            CHAIN_DAY_JOB, world.start_date.isoformat(), "chain_day"), "the chain's changes of the day come first"
        entered = definitions.resolve_job_def(CHAIN_DAY_JOB).execute_in_process(
            instance=instance, partition_key=chain_day.partition_key)
        assert entered.success
        assert "open at" in tick(shift.start - timedelta(minutes=5))
        opening = tick(shift.start + timedelta(minutes=1))
        assert opening.tags[LIVE_STEP_TAG] == "open" and opening.job_name == LIVE_SALES_JOB
        assert opening.run_config["ops"]["write_terminal_sales"]["config"]["shop_ids"] == list(world.shop_ids)
        for shop in world.shops:
            sync_cache(shop, shop_databases, sync_api, shift.start)
            take_deliveries(world, shop, shift, shop_databases)
        first_sale = min(next_live_sale(world, shop, shift, shop_databases) for shop in world.shops)
        checkpoint = shift.start + timedelta(minutes=world.sales.stock_report_interval_minutes)
        assert checkpoint < first_sale - timedelta(minutes=1), "stock starts at 0: sales follow a delivery"
        assert "next receipt is due" in tick(checkpoint - timedelta(seconds=1)), "no run while nothing is due"
        assert tick(checkpoint).tags[LIVE_STEP_TAG] == "sales", "a stock checkpoint is due"
        assert "next receipt is due" in tick(first_sale - timedelta(seconds=1)), "that checkpoint is done"
        sales = tick(first_sale + timedelta(seconds=1))
        assert sales.tags[LIVE_STEP_TAG] == "sales" and sales.tags[LIVE_UNTIL_TAG] == \
            (first_sale + timedelta(seconds=1)).isoformat()
        # A catalogue message on Kafka the shops have not applied holds every step back until its upsert ran.
        with kafka.consumer() as consumer:
            ends = {(t, p): kafka.watermarks(consumer, t, p)[1] for t in CATALOGUE_TOPICS
                    for p in range(kafka.partitions(t))}
        for shop in world.shops:
            with shop_databases.transaction(shop.shop_id) as conn:
                advance_catalogue_offsets(conn, ends)  # the shops have caught up with the topics
        inject_malformed_message(kafka, PROVENANCE)
        assert "upsert of 1 catalogue message" in tick(first_sale + timedelta(seconds=2))
        with kafka.consumer() as consumer:
            high = kafka.watermarks(consumer, PRODUCT_TOPIC, 0)[1]
        apply_catalogue_ranges(world, shop_databases, kafka, [(PRODUCT_TOPIC, 0, ends[PRODUCT_TOPIC, 0], high)],
                               PROVENANCE)
        assert tick(first_sale + timedelta(seconds=2)).tags[LIVE_STEP_TAG] == "sales", "applied (set aside): on"
        closing = tick(shift.end + timedelta(minutes=1))
        assert closing.tags[LIVE_STEP_TAG] == "close"
        assert closing.job_name == "shop_shift_job" and closing.asset_selection is None, "the whole shift job"


def test_live_mode_switched_on_from_the_ui_is_run_by_the_daemon(tmp_path: Path, sync_server: LoopbackServer) -> None:
    """Under make dev, with no live command: the launchpad's run of live_clock_job sets the clock, the
    sensor's switch turns it on, and the daemon opens the shift, writes its receipts as the clock
    passes and closes it; a second run of the job (running: false) switches live mode off."""
    data = tmp_path / "data"
    env = {**dev_environment(data, sync_server.url), "ROSSMANN_SHOP_COUNT": str(SHOPS),
           "ROSSMANN_SYNC_API_ADMIN_TOKEN": TEST_ADMIN_TOKEN}  # the chain's day of changes goes in through it
    # 600x: the shift's 6 hours last 36 s, time for the sensor's ticks and the runs' starts to open it
    # on a loaded machine (at 1800x, 12 s: the first run started late, found the shift over and closed it).
    clock = {"speed": 600, "start": "2026-06-01T09:00", "stop_at": "2026-06-01T15:00"}
    with running_dev(env, tmp_path / "dev.log") as ui:
        on = ui.launch_run(LIVE_CLOCK_JOB, {}, run_config={"ops": {"set_live_clock": {"config": clock}}})
        assert ui.wait_for_run(on) == "SUCCESS", ui.run(on).failure()
        ui.start_sensor(LIVE_SENSOR)
        deadline = time.monotonic() + 300
        while not all(shift_state(data, shop)[1] for shop in range(1, SHOPS + 1)):
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()[-3000:]
            time.sleep(0.5)
        ui.stop_sensor(LIVE_SENSOR)
        steps = {step: ui.runs(tags={LIVE_STEP_TAG: step}) for step in ("open", "sales", "close")}
        off = ui.launch_run(LIVE_CLOCK_JOB, {}, run_config={"ops": {"set_live_clock": {"config": {"running": False}}}})
        assert ui.wait_for_run(off) == "SUCCESS"
        for runs in steps.values():
            for run in runs:
                ui.wait_for_run(run["runId"])
        steps = {step: [ui.run(r["runId"]) for r in runs] for step, runs in steps.items()}
    assert len(steps["open"]) >= 1 and len(steps["close"]) >= 1, {k: len(v) for k, v in steps.items()}
    assert all(run.success for runs in steps.values() for run in runs), \
        [(run.job, run.status, run.failure()) for runs in steps.values() for run in runs if not run.success]
    assert all(run.tags.get("dagster/sensor_name") == LIVE_SENSOR for runs in steps.values() for run in runs)
    assert all(receipts for receipts, _ in (shift_state(data, shop) for shop in range(1, SHOPS + 1)))
    state = LiveClockFile(path=str(data / "live" / "clock.json")).read()
    assert state is not None and not state.running and state.speed == 600


def test_live_mode_with_a_scenario_ends_with_make_days_rows(tmp_path: Path, messy_day: MadeDay) -> None:
    """One clock: a day of the messy-day scenario in live mode (the chain's changes and stream faults
    entered by its job before the shifts open, the late changes by theirs after the day's shifts, the
    shifts they fall into sold again) leaves the shop databases row for row as make day leaves them
    (make day's chain has five shops: a shop's rows do not depend on how many others there are)."""
    data, log = tmp_path / "live", tmp_path / "live.log"
    args = ("--scenario", "messy-day", "--speed", "1800", "--start", "2026-06-01T09:00",
            "--stop-at", "2026-06-01T21:00")
    with stopped_at_the_end(start_live(data, log, *args)) as live:
        assert live.wait(timeout=600) == 0, log.read_text()[-3000:]
    out = log.read_text()
    assert "the chain entered the day's" in out and "late catalogue changes" in out, out[-3000:]
    assert "--stop-at reached" in out, out[-3000:]
    live_shops = ShopDatabases(sqlite_dir=str(data / "shops"))
    try:
        for shop_id in range(1, SHOPS + 1):
            rows = messy_day.receipts[shop_id]
            assert rows, "make day sold the day"
            assert receipts_of(live_shops, shop_id) == rows, f"shop {shop_id}: live rows == make day's rows"
            assert stock_and_ledger(live_shops, shop_id) == messy_day.stock[shop_id]
    finally:
        live_shops.dispose()
