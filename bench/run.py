"""Benchmarks (not in CI): ``make bench``. Prints a table of measured figures against targets.

1. A full simulated day of the 5 reference shops through Dagster (the main command's path:
   stand-in Sync API on loopback, SQLite shops, a Dagster instance), wall time per day.
2. Receipt lines written per second into Postgres by the shop's own writer (``ledger.insert_receipts``,
   one transaction per shift as in the asset) against COPY of the very same rows, in the same run.
3. Report rows per second into ClickHouse (chDB) by the report writer (``replace_shift_rows``: look for
   an earlier copy, insert the shift) against a raw clickhouse-connect insert of the same rows.
4. Catalogue messages applied per second end to end (broker -> upsert runs through Dagster -> the 5
   shops' databases) against the reference's pattern (per message and shop, one upsert and one
   commit), on the same messages in the same run.
5. The simulation alone on one core (``bench/simulation.py``: 20 shops x 14 days), receipts per second.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import click
import dagster as dg
from sqlalchemy import create_engine, text

from bench.simulation import SIMULATION_BEFORE
from bench.simulation import run as simulate
from rossmann_local.defs import build_definitions
from rossmann_local.domain.catalogue import ProductRecord
from rossmann_local.domain.catalogue_changes import product_key
from rossmann_local.domain.catalogue_fold import CatalogueFold
from rossmann_local.domain.messages import ProductMessage
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.simulation import Receipt, configured_shelf, simulate_terminal_sales
from rossmann_local.domain.topics import PRODUCT_TOPIC
from rossmann_local.domain.world import World, reference_world
from rossmann_local.local.broker import LocalBroker
from rossmann_local.reports.schema import DATABASE, TRANSACTIONS
from rossmann_local.reports.writer import replace_shift_rows
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.cache import upsert_product_changes, upsert_products
from rossmann_local.shop_db.ledger import LINE_COLUMNS, RECEIPT_COLUMNS
from rossmann_local.shop_db.models import ShopBase
from rossmann_local.shop_db.report_rows import transactions_report_rows
from rossmann_local_tests.in_process import QUIET_RUN_CONFIG, CatalogueSensorDriver, MemoryCursor

PG_ADMIN_URL = os.environ.get("ROSSMANN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def bench_day(repeats: int) -> list[float]:
    """Seconds of ``make day`` cold: a simulated day of every reference shop (sync, deliveries, sales,
    stock messages, reports, the sensors' upserts and expected answers) through Dagster's daemon, each
    on a fresh data dir, the command's whole wall time (local stack and dagster dev started included)."""
    timings = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("ROSSMANN_", "KAFKA_", "DAGSTER_"))}
            env.update(ROSSMANN_DATA_DIR=f"{tmp}/data", TZ="UTC")
            started = time.perf_counter()
            day = subprocess.run([sys.executable, "-m", "rossmann_local.local.day"], env=env, capture_output=True,
                                 text=True, check=False)
            timings.append(time.perf_counter() - started)
        assert day.returncode == 0, day.stderr[-2000:]
    return timings


def busy_shifts(shifts: int) -> list[tuple[ShiftWindow, list[Receipt]]]:
    """Receipts of ``shifts`` consecutive shifts of one shop with 40 terminals and a full shelf."""
    big = reference_world(shop_count=1, terminals_per_shop=40, cashiers_per_shop=3)
    shop = big.shop(1)
    shelf = configured_shelf(big, shop.city)
    stock = {p.product_id: 10**9 for p in shelf}
    windows = [w for day in range(shifts) for w in shifts_of_day(big, big.start_date + timedelta(days=day))][:shifts]
    return [(w, simulate_terminal_sales(big, shop, w, shelf, stock, []).receipts) for w in windows]


def bench_receipt_writes(shifts: int) -> tuple[int, float, float]:
    """(lines, seconds through ledger.insert_receipts, seconds through COPY) for the same rows."""
    world = reference_world()
    batches = busy_shifts(shifts)
    lines = sum(len(r.lines) for _, receipts in batches for r in receipts)
    name = f"rossmann_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        ShopBase.metadata.create_all(engine)
        with engine.begin() as conn:  # receipt lines reference products: load the catalogue once
            upsert_products(conn, catalogue(world), "Berlin")

        def ours() -> None:
            for shift, receipts in batches:
                with engine.begin() as conn:
                    ledger.insert_receipts(conn, shift, receipts)

        def copy() -> None:
            for shift, receipts in batches:
                with engine.begin() as conn:
                    cursor = conn.connection.driver_connection.cursor()
                    with cursor.copy(f"COPY transactions (shift_start, {', '.join(RECEIPT_COLUMNS)}) FROM STDIN") as cp:
                        for r in receipts:
                            cp.write_row((shift.start, *(getattr(r, c) for c in RECEIPT_COLUMNS)))
                    with cursor.copy(f"COPY transaction_items (transaction_id, {', '.join(LINE_COLUMNS)}) "
                                     "FROM STDIN") as cp:
                        for r in receipts:
                            for line in r.lines:
                                cp.write_row((r.transaction_id, *(getattr(line, c) for c in LINE_COLUMNS)))

        def truncate() -> None:
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE transaction_items, transactions"))

        def timed(fn: Callable[[], None]) -> float:
            truncate()
            started = time.perf_counter()
            fn()
            return time.perf_counter() - started

        ours_s = statistics.median(timed(ours) for _ in range(3))
        copy_s = statistics.median(timed(copy) for _ in range(3))
        return lines, ours_s, copy_s
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench_report_writes(shifts: int) -> tuple[int, float, float]:
    """(rows, seconds through the report writer, seconds through a raw insert) for the same rows."""
    batches = busy_shifts(shifts)
    with tempfile.TemporaryDirectory() as tmp:
        shops = ShopDatabases(sqlite_dir=f"{tmp}/shops")
        world = reference_world(shop_count=1)
        with shops.transaction(1) as conn:
            upsert_products(conn, catalogue(world), "Berlin")
            report_rows = []
            for shift, receipts in batches:
                ledger.insert_receipts(conn, shift, receipts)
                ledger.record_shift(conn, shift, admin_id=2)
                report_rows.append((shift, transactions_report_rows(conn, shift, 1, "Germany", "Berlin")))
        shops.dispose()
        rows = sum(len(r) for _, r in report_rows)
        reports = ClickHouseReports(dsn=f"chdb://{tmp}/clickhouse")
        timings = {"ours": 0.0, "raw": 0.0}
        with reports.client() as client:
            table, twin = f"{DATABASE}.{TRANSACTIONS}", f"{DATABASE}.{TRANSACTIONS}_raw"
            client.command(f"CREATE TABLE {twin} AS {table}")
            for repeat in range(4):  # the first pass warms the engine up and is not counted
                client.command(f"TRUNCATE TABLE {table}")
                client.command(f"TRUNCATE TABLE {twin}")
                # Shift by shift, both ways in turn (which goes first alternates), so background
                # merges and warm caches weigh on both alike.
                for number, (shift, shift_rows) in enumerate(report_rows):
                    ways: list[tuple[str, Callable[[], None]]] = [
                        ("raw", lambda r=shift_rows: client.insert(twin, r.rows, column_names=list(r.columns))),
                        ("ours", lambda s=shift, r=shift_rows: replace_shift_rows(client, 1, s.start, r)),
                    ]
                    for name, write in ways[:: 1 if number % 2 else -1]:
                        started = time.perf_counter()
                        write()
                        if repeat:
                            timings[name] += time.perf_counter() - started
            assert client.query(f"SELECT count() FROM {table}").result_rows[0][0] == rows
        return rows * 3, timings["ours"], timings["raw"]


def price_messages(world: World, count: int) -> list[Outgoing[int]]:
    """Price changes over the catalogue, each city in turn, time moving on (a microsecond apart, from
    within the world's days: later ones are refused)."""
    started_at = datetime(2026, 12, 1, tzinfo=UTC)
    cities = [c.name for c in world.cities]

    def price_update(n: int) -> Outgoing[int]:
        p = world.products[n % len(world.products)]
        city = cities[n % len(cities)]
        return Outgoing(PRODUCT_TOPIC, ProductMessage(
            product_id=p.product_id, name=p.name, description=p.description, barcode=p.barcode,
            category_id=p.category_id, price=p.prices[city].price + Decimal(n % 100) / 100,
            discount=p.prices[city].discount, city=city,
            updated_at_utc=started_at + timedelta(microseconds=n)).model_dump_json().encode(), tag=n,
            key=product_key(p.product_id, city).encode())

    return [price_update(n) for n in range(count)]


def bench_streaming(message_count: int, reference_sample: int) -> tuple[int, float, int, float]:
    """(messages, seconds through the upsert runs, reference messages, seconds of the reference pattern)."""
    world = reference_world()
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(Path(tmp) / "kafka") as broker:
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers)
        kafka.ensure_topics()
        assert kafka.produce_confirmed(price_messages(world, message_count), timeout=120).unconfirmed == 0

        def fresh_shops(name: str) -> ShopDatabases:
            shops = ShopDatabases(sqlite_dir=f"{tmp}/{name}")
            for shop in world.shops:
                with shops.transaction(shop.shop_id) as conn:
                    upsert_products(conn, catalogue(world, shop.city), shop.city)
            return shops

        ours = fresh_shops("ours")
        resources = {"shop_databases": ours, "kafka": kafka, "sync_api": SyncApiClient(),
                     "clickhouse": ClickHouseReports()}
        sensor = CatalogueSensorDriver(build_definitions(world, resources), dg.DagsterInstance.ephemeral(),
                                       MemoryCursor(), QUIET_RUN_CONFIG)
        started = time.perf_counter()
        applied = dead = 0
        for _request, result in sensor.tick_and_run():
            applied += result.output_for_node("apply_catalogue_changes")["messages"]
            dead += result.output_for_node("apply_catalogue_changes")["dead_lettered"]
        ours_s = time.perf_counter() - started
        assert applied == message_count and dead == 0

        reference = fresh_shops("reference")
        engines = {shop.shop_id: reference.engine(shop.shop_id) for shop in world.shops}
        started = time.perf_counter()
        for raw in kafka.read_range(PRODUCT_TOPIC, 0, 0, reference_sample):
            message: CatalogueFold[None] = CatalogueFold()
            message.add_message(ProductMessage.model_validate_json(raw.value), None)
            for shop in world.shops:  # a consumer per shop, each: upsert one row, commit
                with engines[shop.shop_id].begin() as conn:
                    upsert_product_changes(conn, message.product_changes_for(shop.city))
        reference_s = time.perf_counter() - started
        ours.dispose()
        reference.dispose()
        return message_count, ours_s, reference_sample, reference_s


def catalogue(world: World, city: str = "Berlin") -> list[ProductRecord]:
    return [ProductRecord(product_id=p.product_id, name=p.name, barcode=p.barcode, category_id=p.category_id,
                          price=p.prices[city].price, discount=p.prices[city].discount,
                          updated_at_utc=datetime(2029, 1, 1, tzinfo=UTC)) for p in world.products]


@click.command(help=__doc__.splitlines()[0])
@click.option("--day-repeats", type=int, default=3, show_default=True)
@click.option("--shifts", type=int, default=12, help="busy shifts (about 8,500 lines each) written", show_default=True)
@click.option("--messages", type=int, default=200_000, help="catalogue messages streamed", show_default=True)
@click.option("--stream-only", is_flag=True, help="only the catalogue stream: three runs and their median")
def main(stream_only: bool, **options: int) -> None:
    args = SimpleNamespace(**options)
    if stream_only:
        rates = [m / s for m, s, _, _ in (bench_streaming(args.messages, 10) for _ in range(3))]
        print(f"catalogue messages applied, broker -> upsert runs -> 5 shops ({args.messages} messages): "
              f"{statistics.median(rates):,.0f} messages/s (median of " + ", ".join(f"{r:,.0f}" for r in rates) + ")")
        return
    messages, stream_s, reference_messages, reference_s = bench_streaming(args.messages, 5_000)
    simulated = [simulate(20, 14) for _ in range(3)]
    sim_s = statistics.median(r[2] for r in simulated)
    day = bench_day(args.day_repeats)
    lines, ours_s, copy_s = bench_receipt_writes(args.shifts)
    # chDB's background merges make single runs of the report comparison swing by +-20 %: three runs.
    report_runs = [bench_report_writes(args.shifts) for _ in range(3)]
    report_rows = sum(r[0] for r in report_runs)
    report_s, raw_s = sum(r[1] for r in report_runs), sum(r[2] for r in report_runs)
    each = ", ".join(f"{raw / ours:.0%}" for _, ours, raw in report_runs)
    rows = [
        ("make day cold, 5 shops, through the daemon (stack, dagster dev, runs, sensors, summary)",
         f"{statistics.median(day):.2f} s (median of {len(day)}: " + ", ".join(f"{t:.2f}" for t in day) + ")",
         "<= 20 s"),
        (f"receipt lines into Postgres, ledger writer ({lines} lines)", f"{lines / ours_s:,.0f} lines/s", ">= 50,000"),
        ("same rows via COPY", f"{lines / copy_s:,.0f} lines/s", "reference"),
        ("writer / COPY", f"{copy_s / ours_s:.0%}", ">= 50%"),
        (f"report rows into ClickHouse (chDB), report writer ({report_rows} rows)",
         f"{report_rows / report_s:,.0f} rows/s", ""),
        ("same rows, raw clickhouse-connect insert", f"{report_rows / raw_s:,.0f} rows/s", "reference"),
        ("report writer / raw insert", f"{raw_s / report_s:.0%} (runs: {each})", ">= 90%"),
        (f"catalogue messages applied, broker -> upsert runs -> 5 shops ({messages} messages)",
         f"{messages / stream_s:,.0f} messages/s", ">= 50,000"),
        (f"reference pattern: upsert + commit per message and shop ({reference_messages} messages)",
         f"{reference_messages / reference_s:,.0f} messages/s", "reference"),
        ("upsert runs / reference pattern", f"{(messages / stream_s) / (reference_messages / reference_s):,.0f}x",
         ">= 25x"),
        (f"simulation alone, one core, 20 shops x 14 days ({simulated[0][0]:,} receipts, rows {simulated[0][3]})",
         f"{simulated[0][0] / sim_s:,.0f} receipts/s (median of 3)", f">= {4 * SIMULATION_BEFORE:,} (4x before)"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'benchmark'.ljust(widths[0])}  {'measured'.ljust(widths[1])}  target")
    for r in rows:
        print(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}")


if __name__ == "__main__":
    main()
