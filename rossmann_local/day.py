"""The main command: one simulated day of every shop, run through Dagster on the no-service defaults.

``python -m rossmann_local.day [--day YYYY-MM-DD]`` starts a Kafka broker (unless
``KAFKA_BOOTSTRAP_SERVERS`` names one) and the stand-in Sync API on loopback, uses a Dagster instance
under ``ROSSMANN_DATA_DIR`` (unless ``DAGSTER_HOME`` is set), and runs ``shop_shift_job`` for every
shop x shift of the day (sync, deliveries, sales, stock messages, reports to ClickHouse). Between the
shifts the chain changes its catalogue (``chain_admin``); the changes travel through Kafka and the
catalogue sensor's upsert runs apply them. It prints a per-shop summary read back from the shop
databases, ClickHouse's totals beside them, and what streaming did. Re-running a day replaces it,
never doubles it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from sqlalchemy import func, select

from rossmann_local import chain_admin
from rossmann_local.defs import SHOP_SHIFT_JOB, build_definitions
from rossmann_local.defs.partitions import partition_key
from rossmann_local.defs.streaming import CATALOGUE_UPSERT_JOB, RUN_KEY_TAG
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import World, load_world
from rossmann_local.reports.analytics import (
    naive_revenue_per_shop_per_day,
    revenue_per_shop_per_day,
    shift_delivery_totals,
)
from rossmann_local.resources.clickhouse import ClickHouseReports, clickhouse_from_env, redacted
from rossmann_local.resources.kafka import KafkaResource, kafka_from_env
from rossmann_local.resources.shop_databases import ShopDatabases, shop_databases_from_env
from rossmann_local.resources.sync_api_client import SyncApiClient, sync_api_client_from_env
from rossmann_local.settings import KAFKA_BOOTSTRAP_SERVERS, SYNC_API_URL, ConfigError, data_dir
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.models import StockMessage, Transaction, TransactionItem
from rossmann_local.streaming.broker import LocalBroker
from rossmann_local.sync_api.outbox import OutboxRelay
from rossmann_local.sync_api.server import open_seeded_store, sync_api_server
from rossmann_local.sync_api.store import CatalogueStore

# The summary reports failed runs with their cause; Dagster's console log would repeat each with stack traces.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class ShopDay:
    shop_id: int
    city: str
    runs_ok: int = 0
    runs_failed: list[str] = field(default_factory=list)
    receipts: int = 0
    lines: int = 0
    units_sold: int = 0
    revenue: Decimal = Decimal("0")
    units_delivered: int = 0
    stock_units: int = 0
    sold_out: int = 0
    reported_receipts: int = 0
    reported_revenue: Decimal = Decimal("0")
    reported_units_delivered: int = 0
    naive_revenue: Decimal = Decimal("0")
    stock_messages_sent: int = 0

    @property
    def reports_match(self) -> bool:
        return (self.reported_receipts, self.reported_revenue, self.reported_units_delivered) == (
            self.receipts, self.revenue, self.units_delivered)


MANAGED_INSTANCE_YAML = """\
# Written by rossmann_local for the no-service default instance; edits are overwritten.
telemetry:
  enabled: false  # no network here
# One event-log database instead of one SQLite file per run: half the time of a run here.
event_log_storage:
  module: dagster.core.storage.event_log
  class: ConsolidatedSqliteEventLogStorage
  config:
    base_dir:
      env: DAGSTER_HOME
concurrency:
  runs:
    tag_concurrency_limits:
      # A backfill's runs (one per shift, every shop) go one after another, in shift order:
      # each shift starts from the stock the one before it left.
      - key: dagster/backfill
        value: {applyLimitPerUniqueValue: true}
        limit: 1
      # One single-partition run per shop at a time, for the same reason.
      - key: dagster/partition/shop
        value: {applyLimitPerUniqueValue: true}
        limit: 1
  pools:
    # Only the ClickHouse ops are in a pool: chDB lets one process open its directory at a time.
    default_limit: 1
"""


def dagster_instance() -> dg.DagsterInstance:
    """The persistent instance under the data dir (SQLite storage), unless ``DAGSTER_HOME`` names one."""
    if not os.environ.get("DAGSTER_HOME"):
        home = data_dir() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists() or config.read_text() != MANAGED_INSTANCE_YAML:
            config.write_text(MANAGED_INSTANCE_YAML)
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


@dataclass
class Streaming:
    """What the day's catalogue changes and stock messages did."""

    changes_published: int = 0
    promotion_prices: list[str] = field(default_factory=list)  # what the receipts charged before and after
    upsert_runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    outcome: Counter[str] = field(default_factory=Counter)


class CatalogueFeed:
    """The chain's side during the day: catalogue changes to Kafka, then the sensor's upsert runs."""

    def __init__(self, world: World, store: CatalogueStore | None, kafka: KafkaResource,
                 instance: dg.DagsterInstance, resources: dict[str, Any]) -> None:
        self.world, self.store, self.kafka, self.instance = world, store, kafka, instance
        definitions = build_definitions(world, resources)
        self.sensor = definitions.resolve_sensor_def("catalogue_changes_sensor")
        self.upsert_job = definitions.resolve_job_def(CATALOGUE_UPSERT_JOB)
        self.cursor_file = data_dir() / "catalogue_sensor_cursor.json"
        self.streaming = Streaming()

    def publish(self, change: Callable[[CatalogueStore, World], int], relay: OutboxRelay | None) -> None:
        if self.store is None or relay is None:
            return  # an external Sync API: its own admin side changes its catalogue
        self.streaming.changes_published += change(self.store, self.world)
        deadline = time.monotonic() + 60
        while self.store.unpublished() and time.monotonic() < deadline:
            time.sleep(0.05)

    def apply(self) -> None:
        """One sensor tick, and its upsert runs executed right away (the daemon's job in a deployment)."""
        cursor = self.cursor_file.read_text() if self.cursor_file.exists() else None
        context = dg.build_sensor_context(instance=self.instance, cursor=cursor, resources={"kafka": self.kafka})
        result = self.sensor(context)
        for request in result.run_requests or []:
            run = self.upsert_job.execute_in_process(
                run_config={**request.run_config, **QUIET_RUN_CONFIG}, instance=self.instance, raise_on_error=False,
                tags={**request.tags, RUN_KEY_TAG: request.run_key})
            self.streaming.upsert_runs += 1
            if not run.success:
                self.streaming.failed_runs.append(f"{request.run_key}: {_first_failure(run)}")
                continue
            self.streaming.outcome.update(run.output_for_node("apply_catalogue_changes"))
        if result.cursor is not None:
            self.cursor_file.write_text(result.cursor)


def preflight(world: World, resources: dict[str, Any]) -> None:
    """Open every shop database and ClickHouse once before the day: a wrong setting stops the command
    with its name, instead of failing (and retrying) every run of the day."""
    shop_databases: ShopDatabases = resources["shop_databases"]
    for shop in world.shops:
        shop_databases.engine(shop.shop_id)
    shop_databases.dispose()
    with resources["clickhouse"].client():
        pass


def promotion_prices(world: World, shop_databases: ShopDatabases, day: date) -> list[str]:
    """For each promoted product, the unit prices its receipts charged in each shift of one shop of its city."""
    lines = []
    for product_id, city, _factor in chain_admin.PROMOTIONS:
        shop = next(s for s in world.shops if s.city == city)
        with shop_databases.transaction(shop.shop_id) as conn:
            prices = [sorted({str(p) for p in conn.scalars(
                select(TransactionItem.unit_price).join(Transaction)
                .where(Transaction.shift_start == shift.start, TransactionItem.product_id == product_id))})
                for shift in shifts_of_day(world, day)]
        lines.append(f"  product {product_id} in {city} (shop {shop.shop_id}): receipts charged "
                     + " then ".join("/".join(p) or "nothing" for p in prices))
    shop_databases.dispose()
    return lines


def run_shifts(job: dg.JobDefinition, instance: dg.DagsterInstance, world: World, first: ShiftWindow,
               last: ShiftWindow, assets: list[str] | None = None) -> dg.ExecuteInProcessResult:
    """Every shop's shifts from ``first`` to ``last`` in one run (of the named ``assets`` only, if
    given): what a backfill launches under the assets' single-run backfill policy, one run for the
    whole range instead of a process per partition."""
    tags = {ASSET_PARTITION_RANGE_START_TAG: str(partition_key(first, world.shop_ids[0])),
            ASSET_PARTITION_RANGE_END_TAG: str(partition_key(last, world.shop_ids[-1]))}
    selection = [dg.AssetKey(name) for name in assets] if assets else None
    return job.execute_in_process(instance=instance, tags=tags, run_config=QUIET_RUN_CONFIG, raise_on_error=False,
                                  asset_selection=selection)


def run_day(world: World, day: date, resources: dict[str, Any], instance: dg.DagsterInstance,
            feed: Callable[[int], None] | None = None) -> list[ShopDay]:
    """Every shift of the day for every shop: one run of the partitioned job per shift, covering all
    shops. ``feed(i)`` runs before shift ``i`` (catalogue changes and their upsert runs)."""
    job = build_definitions(world, resources).resolve_job_def(SHOP_SHIFT_JOB)
    days = {s.shop_id: ShopDay(s.shop_id, s.city) for s in world.shops}
    shifts = shifts_of_day(world, day)
    for index, shift in enumerate(shifts):
        if feed is not None:
            feed(index)
        result = run_shifts(job, instance, world, shift, shift)
        for shop_day in days.values():
            if result.success:
                shop_day.runs_ok += 1
            else:
                shop_day.runs_failed.append(f"{shift.start:%Y-%m-%d %H:%M}: {_first_failure(result)}")
    shop_databases: ShopDatabases = resources["shop_databases"]
    for shop_day in days.values():
        _read_back(shop_day, shop_databases, shifts)
    shop_databases.dispose()
    _read_reports(list(days.values()), resources["clickhouse"], world, day, shifts)
    return list(days.values())


def _read_reports(shop_days: list[ShopDay], clickhouse: ClickHouseReports, world: World, day: date,
                  shifts: list[ShiftWindow]) -> None:
    """What analytics sees: ClickHouse's revenue per shop per day (each receipt once) and deliveries."""
    by_shop = {d.shop_id: d for d in shop_days}
    with clickhouse.client() as client:
        for row in revenue_per_shop_per_day(client, world.timezone, day, day):
            by_shop[row.shop_id].reported_receipts = row.receipts
            by_shop[row.shop_id].reported_revenue = row.revenue
        for row in naive_revenue_per_shop_per_day(client, world.timezone, day, day):
            by_shop[row.shop_id].naive_revenue = row.revenue
        for shop_day in shop_days:
            shop_day.reported_units_delivered = sum(
                shift_delivery_totals(client, shop_day.shop_id, shift.start)["units"] for shift in shifts)


def _first_failure(result: dg.ExecuteInProcessResult) -> str:
    """The root cause of the first failed step, as one line."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            return f"{event.step_key}: {error.cls_name}: {error.message.strip().splitlines()[0]}"
    return "run failed"


def _read_back(shop_day: ShopDay, shop_databases: ShopDatabases, shifts: list[ShiftWindow]) -> None:
    with shop_databases.transaction(shop_day.shop_id) as conn:
        for shift in shifts:
            totals = ledger.shift_totals(conn, shift)
            shop_day.receipts += int(totals["receipts"])
            shop_day.lines += int(totals["lines"])
            shop_day.units_sold += int(totals["units"])
            shop_day.revenue += Decimal(totals["revenue"])
            shop_day.units_delivered += ledger.shift_delivery_totals(conn, shift)["units"]
        shop_day.stock_units, shop_day.sold_out = ledger.shelf_stock(conn, shifts[-1].end)
        shop_day.stock_messages_sent = int(conn.scalar(
            select(func.count()).select_from(StockMessage)
            .where(StockMessage.shift_start.in_([s.start for s in shifts]), StockMessage.sent_at_utc.is_not(None))))


def render_table(header: tuple[str, ...], rows: list[tuple[str, ...]], total: tuple[str, ...],
                 text_columns: int = 2) -> list[str]:
    """A plain-text table: text columns left-aligned, figures right-aligned, a total row under a rule."""
    widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        padded = (c.ljust(w) if i < text_columns else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    rule = line(tuple("-" * w for w in widths))
    return [line(header), rule, *map(line, rows), rule, line(total)]


def _sum(days: list[ShopDay], name: str) -> Any:
    return sum(getattr(d, name) for d in days)


def format_summary(day: date, shop_days: list[ShopDay], seconds: float, clickhouse_dsn: str,
                   streaming: Streaming) -> str:
    def shop_row(shop: str, city: str, days: list[ShopDay]) -> tuple[str, ...]:
        runs = _sum(days, "runs_ok")
        return (shop, city, f"{runs}/{runs + sum(len(d.runs_failed) for d in days)}",
                *(str(_sum(days, f)) for f in ("receipts", "lines", "units_sold")), f"{_sum(days, 'revenue'):,.2f}",
                *(str(_sum(days, f)) for f in ("units_delivered", "stock_units", "sold_out")))

    def report_row(shop: str, days: list[ShopDay]) -> tuple[str, ...]:
        return (shop, str(_sum(days, "receipts")), str(_sum(days, "reported_receipts")),
                f"{_sum(days, 'revenue'):,.2f}", f"{_sum(days, 'reported_revenue'):,.2f}",
                str(_sum(days, "units_delivered")), str(_sum(days, "reported_units_delivered")),
                "yes" if all(d.reports_match for d in days) else "NO", f"{_sum(days, 'naive_revenue'):,.2f}")

    out = [f"Simulated day {day.isoformat()}: {len(shop_days)} shops, {seconds:.1f} s", ""]
    out += render_table(("shop", "city", "shifts", "receipts", "lines", "units sold", "revenue EUR", "units delivered",
                         "stock at close", "sold out"),
                        [shop_row(str(d.shop_id), d.city, [d]) for d in shop_days], shop_row("all", "", shop_days))
    out += ["", f"Reports in ClickHouse ({clickhouse_dsn}) against the shop databases:", ""]
    out += render_table(("shop", "receipts db", "receipts ch", "revenue db", "revenue ch", "delivered db",
                         "delivered ch", "match", "per-line sum (wrong)"),
                        [report_row(str(d.shop_id), [d]) for d in shop_days], report_row("all", shop_days),
                        text_columns=1)
    out.append("(revenue ch counts each receipt once; summing transaction_total_amount per line over-counts)")
    o = streaming.outcome
    out += ["", "Streaming (Kafka):",
            f"  catalogue changes published by the chain: {streaming.changes_published} "
            f"(+1 malformed message injected by the demo)",
            f"  upsert runs requested by the sensor: {streaming.upsert_runs}, over {o['messages']} messages",
            f"  messages applied: {o['applied']}, skipped as stale: {o['skipped_as_stale']}, "
            f"dead-lettered: {o['dead_lettered']}, price without city: {o['price_without_city']} "
            f"(shop rows changed: {o['rows_changed']})",
            f"  stock messages sent (oltp_update_product_quantity): {_sum(shop_days, 'stock_messages_sent')}",
            *streaming.promotion_prices]
    out += [f"FAILED upsert run {failure}" for failure in streaming.failed_runs]
    out += [f"FAILED {failure}" for failure in dict.fromkeys(f for d in shop_days for f in d.runs_failed)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulate one day of every shop through Dagster.")
    parser.add_argument("--day", type=date.fromisoformat, help="YYYY-MM-DD (default: the world's first day)")
    args = parser.parse_args(argv)
    try:
        world = load_world()
        day = args.day or world.start_date
        if day < world.start_date:
            raise ConfigError(f"--day {day} is before the world's start date {world.start_date}")
        started = time.perf_counter()
        with ExitStack() as stack:
            if os.environ.get(KAFKA_BOOTSTRAP_SERVERS):
                kafka = kafka_from_env()
            else:
                broker = stack.enter_context(LocalBroker(data_dir() / "kafka"))
                kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers)
            kafka.ensure_topics()
            sync_api = sync_api_client_from_env()
            store = relay = None
            if not os.environ.get(SYNC_API_URL):
                store = open_seeded_store(world)
                server = stack.enter_context(sync_api_server(store))
                sync_api = SyncApiClient(base_url=server.url, timeout_seconds=sync_api.timeout_seconds)
                relay = OutboxRelay(store, kafka.producer()).start()
                stack.callback(relay.stop)
            clickhouse = clickhouse_from_env()
            resources = {"shop_databases": shop_databases_from_env(), "sync_api": sync_api, "clickhouse": clickhouse,
                         "kafka": kafka}
            preflight(world, resources)
            instance = dagster_instance()
            catalogue = CatalogueFeed(world, store, kafka, instance, resources)

            def feed(shift_index: int) -> None:
                if shift_index == 0:
                    catalogue.publish(chain_admin.open_the_day, relay)
                elif shift_index == 1:
                    catalogue.publish(chain_admin.start_the_promotion, relay)
                    chain_admin.inject_malformed_message(kafka.producer())
                catalogue.apply()

            shop_days = run_day(world, day, resources, instance, feed)
            if store is not None:
                catalogue.streaming.promotion_prices = promotion_prices(world, resources["shop_databases"], day)
        summary = format_summary(day, shop_days, time.perf_counter() - started, redacted(clickhouse.resolved_dsn()),
                                 catalogue.streaming)
        print(summary)
        print(f"Data: {data_dir()}  (Dagster UI on the same data: make dev)")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    failed = any(d.runs_failed or not d.reports_match for d in shop_days) or catalogue.streaming.failed_runs
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())


