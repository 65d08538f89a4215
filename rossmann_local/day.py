"""The main command: one simulated day of every shop, run through Dagster on the no-service defaults.

``python -m rossmann_local.day [--day YYYY-MM-DD]`` starts the stand-in Sync API on loopback (unless
``ROSSMANN_SYNC_API_URL`` names one), uses a Dagster instance under ``ROSSMANN_DATA_DIR`` (unless
``DAGSTER_HOME`` is set), runs ``shop_shift_job`` for every shop x shift of the day, and prints a
per-shop summary read back from the shop databases. Re-running a day replaces it, never doubles it.
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

import dagster as dg

from rossmann_local.defs import SHOP_SHIFT_JOB, build_definitions
from rossmann_local.defs.partitions import partition_key
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import World, load_world
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


def dagster_instance() -> dg.DagsterInstance:
    """The persistent instance under the data dir (SQLite storage, telemetry off: no network here)."""
    if not os.environ.get("DAGSTER_HOME"):
        home = data_dir() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def run_day(world: World, day: date, shop_databases: ShopDatabases, sync_api: SyncApiClient,
            instance: dg.DagsterInstance) -> list[ShopDay]:
    """Every shift of the day for every shop, shift by shift, as Dagster runs of the partitioned job."""
    job = build_definitions(world, {"shop_databases": shop_databases, "sync_api": sync_api}).resolve_job_def(
        SHOP_SHIFT_JOB)
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
    for shop_day in days.values():
        _read_back(shop_day, shop_databases, shifts)
    shop_databases.dispose()
    return list(days.values())


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
            shop_day.units_delivered += ledger.units_delivered(conn, shift)
        shop_day.stock_units, shop_day.sold_out = ledger.shelf_stock(conn, shifts[-1].end)


def format_summary(day: date, shop_days: list[ShopDay], seconds: float) -> str:
    header = ("shop", "city", "runs", "receipts", "lines", "units sold", "revenue EUR", "units delivered",
              "stock at close", "sold out")

    def row(shop: str, city: str, days: list[ShopDay]) -> tuple[str, ...]:
        runs = sum(d.runs_ok for d in days)
        return (shop, city, f"{runs}/{runs + sum(len(d.runs_failed) for d in days)}",
                *(str(sum(getattr(d, f) for d in days)) for f in ("receipts", "lines", "units_sold")),
                f"{sum(d.revenue for d in days):,.2f}",
                *(str(sum(getattr(d, f) for d in days)) for f in ("units_delivered", "stock_units", "sold_out")))

    rows = [row(str(d.shop_id), d.city, [d]) for d in shop_days]
    total = row("all", "", shop_days)
    widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        padded = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded)

    rule = line(tuple("-" * w for w in widths))
    out = [f"Simulated day {day.isoformat()}: {len(shop_days)} shops, {seconds:.1f} s", line(header), rule,
           *map(line, rows), rule, line(total)]
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
            shop_days = run_day(world, day, shop_databases_from_env(), sync_api, dagster_instance())
        print(format_summary(day, shop_days, time.perf_counter() - started))
        print(f"Data: {data_dir()}  (Dagster UI on the same data: make dev)")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 1 if any(d.runs_failed for d in shop_days) else 0


if __name__ == "__main__":
    sys.exit(main())


