"""The main command: one simulated day of every shop, run through Dagster on the no-service defaults.

``python -m rossmann_local.day [--day YYYY-MM-DD]`` starts the stand-in Sync API on loopback (unless
``ROSSMANN_SYNC_API_URL`` names one), uses a Dagster instance under ``ROSSMANN_DATA_DIR`` (unless
``DAGSTER_HOME`` is set), runs ``shop_shift_job`` for every shop x shift of the day (sync, deliveries,
sales, reports to ClickHouse), and prints a per-shop summary read back from the shop databases, with
ClickHouse's totals beside them. Re-running a day replaces it, never doubles it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import dagster as dg

from rossmann_local.defs import SHOP_SHIFT_JOB, build_definitions
from rossmann_local.defs.partitions import partition_key
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import World, load_world
from rossmann_local.reports.analytics import (
    naive_revenue_per_shop_per_day,
    revenue_per_shop_per_day,
    shift_delivery_totals,
)
from rossmann_local.resources.clickhouse import ClickHouseReports, clickhouse_from_env, redacted
from rossmann_local.resources.shop_databases import ShopDatabases, shop_databases_from_env
from rossmann_local.resources.sync_api_client import SyncApiClient, sync_api_client_from_env
from rossmann_local.settings import SYNC_API_URL, ConfigError, data_dir
from rossmann_local.shop_db import ledger
from rossmann_local.sync_api.server import open_seeded_store, sync_api_server

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


def run_day(world: World, day: date, resources: dict[str, Any], instance: dg.DagsterInstance) -> list[ShopDay]:
    """Every shift of the day for every shop, shift by shift, as Dagster runs of the partitioned job."""
    job = build_definitions(world, resources).resolve_job_def(SHOP_SHIFT_JOB)
    days = {s.shop_id: ShopDay(s.shop_id, s.city) for s in world.shops}
    shifts = shifts_of_day(world, day)
    for shift in shifts:
        for shop in world.shops:
            key = partition_key(shift, shop.shop_id)
            result = job.execute_in_process(instance=instance, partition_key=key, run_config=QUIET_RUN_CONFIG,
                                            raise_on_error=False)
            if result.success:
                days[shop.shop_id].runs_ok += 1
            else:
                days[shop.shop_id].runs_failed.append(f"{key}: {_first_failure(result)}")
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


def format_summary(day: date, shop_days: list[ShopDay], seconds: float, clickhouse_dsn: str) -> str:
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
    out += render_table(("shop", "city", "runs", "receipts", "lines", "units sold", "revenue EUR", "units delivered",
                         "stock at close", "sold out"),
                        [shop_row(str(d.shop_id), d.city, [d]) for d in shop_days], shop_row("all", "", shop_days))
    out += ["", f"Reports in ClickHouse ({clickhouse_dsn}) against the shop databases:", ""]
    out += render_table(("shop", "receipts db", "receipts ch", "revenue db", "revenue ch", "delivered db",
                         "delivered ch", "match", "per-line sum (wrong)"),
                        [report_row(str(d.shop_id), [d]) for d in shop_days], report_row("all", shop_days),
                        text_columns=1)
    out.append("(revenue ch counts each receipt once; summing transaction_total_amount per line over-counts)")
    out += [f"FAILED {failure}" for d in shop_days for failure in d.runs_failed]
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
            sync_api = sync_api_client_from_env()
            if not os.environ.get(SYNC_API_URL):
                server = stack.enter_context(sync_api_server(open_seeded_store(world)))
                sync_api = SyncApiClient(base_url=server.url, timeout_seconds=sync_api.timeout_seconds)
            clickhouse = clickhouse_from_env()
            resources = {"shop_databases": shop_databases_from_env(), "sync_api": sync_api, "clickhouse": clickhouse}
            shop_days = run_day(world, day, resources, dagster_instance())
        print(format_summary(day, shop_days, time.perf_counter() - started, redacted(clickhouse.resolved_dsn())))
        print(f"Data: {data_dir()}  (Dagster UI on the same data: make dev)")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 1 if any(d.runs_failed or not d.reports_match for d in shop_days) else 0


if __name__ == "__main__":
    sys.exit(main())


