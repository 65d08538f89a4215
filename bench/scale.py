"""Scale benchmark (not in CI): ``make bench-scale`` (``python -m bench.scale --shops 100 --days 7``).

Backfills every shop x shift of ``--days`` days for ``--shops`` shops on the no-service defaults
(SQLite shop files, chDB, the local Kafka broker, the stand-in Sync API on loopback, the persistent
SQLite Dagster instance of ``make day``) as **one run** over the whole partition range, launched
through the daemon's run queue (``rossmann_local.local.backfill``, what ``make backfill`` runs). With
``--workers N`` the shops are split into N groups run side by side; ``--days-per-run`` cuts the days
into several runs per group. Prints wall time, partitions per second, peak RSS, and checks the
result: every partition of every asset materialized, ClickHouse equal to
the shop databases, every stock message confirmed, stock never below zero nor above its target.
Then, in the same run, what the parts could do with the same rows (bench/limits.py): the simulation
alone on one core and on every core, the shop databases' raw inserts and ClickHouse's raw insert,
and end to end as a share of each.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import click
import dagster as dg
from sqlalchemy import Connection, func, select

from bench.chain import no_service_chain
from bench.limits import clickhouse_raw_insert, simulation_alone, sqlite_raw_inserts
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.simulation import stock_levels
from rossmann_local.domain.world import reference_world
from rossmann_local.local.backfill import backfill, peak_rss_mib
from rossmann_local.local.dagster_ui import dagster_on
from rossmann_local.local.instance import managed_instance
from rossmann_local.reports.analytics import revenue_per_shop_per_day
from rossmann_local.settings import SHOP_COUNT, data_dir
from rossmann_local.shop_db.models import Delivery, DeliveryItem, StockMessage, Transaction, TransactionItem

TARGET_SECONDS = 60
ASSETS = ("synced_cache", "shift_deliveries", "shift_transactions", "shift_stock_levels", "transactions_report",
          "delivery_report")


def stock_extremes(conn: Connection) -> tuple[dict[int, int], dict[int, int]]:
    """Each product's lowest and highest stock at any moment, replayed from the shop's ledger."""
    moves = [(t, pid, q) for t, pid, q in conn.execute(
        select(Delivery.accepted_time, DeliveryItem.product_id, DeliveryItem.quantity)
        .join(Delivery, Delivery.delivery_id == DeliveryItem.delivery_id))]
    moves += [(t, pid, -q) for t, pid, q in conn.execute(
        select(Transaction.transaction_time, TransactionItem.product_id, TransactionItem.quantity)
        .join(Transaction, Transaction.transaction_id == TransactionItem.transaction_id))]
    level: dict[int, int] = {}
    lowest: dict[int, int] = {}
    highest: dict[int, int] = {}
    for _, pid, change in sorted(moves, key=lambda m: (m[0], -m[2])):  # a delivery before a sale at the same time
        level[pid] = level.get(pid, 0) + change
        lowest[pid] = min(lowest.get(pid, 0), level[pid])
        highest[pid] = max(highest.get(pid, 0), level[pid])
    return lowest, highest


@click.command(help=__doc__.splitlines()[0])
@click.option("--shops", type=int, default=100, show_default=True)
@click.option("--days", type=int, default=7, show_default=True)
@click.option("--workers", type=int, default=1, help="shop groups side by side (local/backfill)", show_default=True)
@click.option("--days-per-run", type=int, default=0, help="days per run (default: all in one run)", show_default=True)
def main(**options: int) -> None:
    args = SimpleNamespace(**options)
    world = reference_world(args.shops)
    first_day = world.start_date
    shifts = [s for d in range(args.days) for s in shifts_of_day(world, first_day + timedelta(days=d))]
    partitions = len(shifts) * args.shops
    with no_service_chain(world) as stack:
        shops, clickhouse = stack.shop_databases, stack.clickhouse
        broker = stack.broker
        instance = managed_instance()
        rss_before = peak_rss_mib()
        started = time.perf_counter()
        with dagster_on(stack, "bench-scale", **{SHOP_COUNT: str(args.shops)}) as ui:
            groups = backfill(world, ui, first_day, args.days, args.workers, args.days_per_run or args.days,
                              quiet=True)
        seconds = time.perf_counter() - started
        rss_peak, broker_peak = peak_rss_mib(), peak_rss_mib(broker.pid if broker and broker.pid else 0)
        failures = [cause for g in groups for _, ok, _, cause in g.runs if not ok]
        assert not failures, failures
        run_ids = [run_id for g in groups for run_id, _, _, _ in g.runs]
        logs = [e for run_id in run_ids for e in instance.all_logs(run_id) if e.dagster_event]
        first_run = [e for e in instance.all_logs(run_ids[0]) if e.dagster_event]
        run_started = min(e.timestamp for e in first_run)
        first_step = next(e.timestamp for e in first_run if e.dagster_event.event_type_value == "STEP_START")
        planned = sum(1 for e in logs if e.dagster_event.event_type_value == "ASSET_MATERIALIZATION_PLANNED")
        steps: dict[str, float] = {}
        for e in logs:
            if e.dagster_event.event_type_value == "STEP_SUCCESS":
                steps[e.step_key] = steps.get(e.step_key, 0) + e.dagster_event.event_specific_data.duration_ms / 1000
        materialized = {a: len(instance.get_materialized_partitions(dg.AssetKey(a))) for a in ASSETS}
        receipts, lines, revenue, unsent = 0, 0, Decimal("0"), 0
        lowest_stock, highest_stock, over_target = 0, 0, 0
        for shop in world.shops:
            shop_id = shop.shop_id
            with shops.transaction(shop_id) as conn:
                lowest, highest = stock_extremes(conn)
                lowest_stock = min(lowest_stock, *lowest.values())
                highest_stock = max(highest_stock, *highest.values())
                over_target += sum(1 for pid, top in highest.items() if top > stock_levels(world, shop, pid).target)
                receipts += conn.scalar(select(func.count()).select_from(Transaction))
                lines += conn.scalar(select(func.count()).select_from(TransactionItem))
                revenue += conn.scalar(select(func.coalesce(func.sum(Transaction.total_amount), 0)))
                unsent += conn.scalar(select(func.count()).select_from(StockMessage)
                                      .where(StockMessage.sent_at_utc.is_(None)))
        shops.dispose()
        with clickhouse.client() as client:
            reported = revenue_per_shop_per_day(client, world.timezone, first_day,
                                                first_day + timedelta(days=args.days - 1))
        ch_receipts = sum(r.receipts for r in reported)
        ch_revenue = sum((r.revenue for r in reported), Decimal("0"))
        # What the parts could do with the same rows, measured here after the run (bench/limits.py).
        cores = os.cpu_count() or 1
        sim_receipts, sim_seconds = simulation_alone(args.shops, args.days, 1)
        sim_all_receipts, sim_all_seconds = simulation_alone(args.shops, args.days, cores)
        assert sim_receipts == sim_all_receipts == receipts, (sim_receipts, sim_all_receipts, receipts)
        db_rows, db_seconds = sqlite_raw_inserts(sorted((data_dir() / "shops").glob("shop_*.sqlite")))
        ch_rows, ch_seconds = clickhouse_raw_insert(clickhouse)

    rows = [
        ("backfill", f"{args.shops} shops x {args.days} days = {partitions} shop x shift partitions, "
                     f"{len(run_ids)} run(s), {len(groups)} worker(s)", ""),
        ("wall time", f"{seconds:.1f} s", f"<= {TARGET_SECONDS} s"),
        ("partitions per second", f"{partitions / seconds:.2f}", ""),
        ("receipt lines per second, end to end", f"{lines / seconds:,.0f} ({lines:,} lines)", ""),
        ("receipts per second, end to end", f"{receipts / seconds:,.0f} ({receipts:,} receipts)", ""),
        ("simulation alone, receipts per second: 1 core / all cores",
         f"{sim_receipts / sim_seconds:,.0f} / {sim_all_receipts / sim_all_seconds:,.0f} ({cores} processes)", ""),
        ("end to end / simulation alone on all cores",
         f"{receipts / seconds / (sim_all_receipts / sim_all_seconds):.1%}", ">= 6%"),
        ("shop databases, raw executemany (SQLite, a transaction per shop), rows per second",
         f"{db_rows / db_seconds:,.0f} ({db_rows:,} receipts and lines); end to end "
         f"{(receipts + lines) / seconds / (db_rows / db_seconds):.1%} of it", ""),
        ("ClickHouse, one raw INSERT of the transactions report's rows, rows per second",
         f"{ch_rows / ch_seconds:,.0f} ({ch_rows:,} rows); end to end {lines / seconds / (ch_rows / ch_seconds):.1%} "
         "of it", ""),
        ("peak RSS, this client (the runs are the daemon's processes)",
         f"{rss_peak:.0f} MiB (before the runs: {rss_before:.0f} MiB)", "bounded"),
        ("peak RSS, Kafka broker", f"{broker_peak:.0f} MiB", ""),
        ("each worker: its runs' seconds, in order", "; ".join(
            f"{g.group}: " + ", ".join(f"{r[2]:.1f}" for r in g.runs) for g in groups), ""),
        ("run start to first step", f"{first_step - run_started:.1f} s ({planned} planned-materialization events)", ""),
        ("step seconds (summed over runs)", ", ".join(f"{k} {v:.0f}" for k, v in steps.items()), ""),
        ("partitions materialized per asset", ", ".join(f"{a} {n}" for a, n in materialized.items()),
         f"{partitions} each"),
        ("receipts, shop databases / ClickHouse", f"{receipts:,} / {ch_receipts:,}", "equal"),
        ("revenue EUR, shop databases / ClickHouse", f"{revenue:,.2f} / {ch_revenue:,.2f}", "equal"),
        ("stock messages not confirmed", str(unsent), "0"),
        ("stock at any moment, lowest / highest", f"{lowest_stock} / {highest_stock} units "
         f"({over_target} shop x product above its target)", "0 .. target"),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"{'benchmark'.ljust(width)}  {'measured'.ljust(value_width)}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value.ljust(value_width)}  {target}")
    ok = (all(n == partitions for n in materialized.values()) and receipts == ch_receipts and revenue == ch_revenue
          and unsent == 0 and lowest_stock >= 0 and over_target == 0)
    print("result checks:", "all passed" if ok else "FAILED")


if __name__ == "__main__":
    main()
