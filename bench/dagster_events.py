"""What Dagster's own bookkeeping costs per partition (not in CI): ``python -m bench.dagster_events``.

A ranged run of a no-op asset partitioned as the shop assets are (shift x shop), over ``--shops``
shops x ``--days`` days, materialized with Dagster's public ``dg.materialize`` on an instance with
Dagster's default SQLite storage and on one with dagster-postgres storage (the Postgres server of
``ROSSMANN_TEST_PG_URL``, default 127.0.0.1:5432; left out when none answers). No shop, no broker:
what is measured is Dagster writing one planned and one materialization event per partition and
asset, one statement and commit each. ``make backfill`` pays it for each of its 6 assets; the
undocumented switches that batch those events (``DAGSTER_EVENT_BATCH_SIZE``,
``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``) are not used (dagster-io/dagster#18789, #31694).
"""

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import click
import dagster as dg
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from rossmann_local.defs.partitions import RANGE_END_TAG, RANGE_START_TAG

PG_ADMIN_URL = os.environ.get("ROSSMANN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SHOPS = dg.StaticPartitionsDefinition([str(i) for i in range(1, 101)])
SHIFTS = dg.StaticPartitionsDefinition([f"{d:03d}-{h}" for d in range(365) for h in ("09:00", "15:00")])


@dg.asset(partitions_def=dg.MultiPartitionsDefinition({"shift": SHIFTS, "shop": SHOPS}),
          backfill_policy=dg.BackfillPolicy.single_run())
def no_op_shift(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partitions_in_run": len(context.partition_keys)})


def one_run(home: Path, shops: int, days: int) -> tuple[int, float]:
    instance = dg.DagsterInstance.from_config(str(home))
    started = time.perf_counter()
    result = dg.materialize([no_op_shift], instance=instance, raise_on_error=True, tags={
        RANGE_START_TAG: "000-09:00|1", RANGE_END_TAG: f"{days - 1:03d}-15:00|{shops}"})
    seconds = time.perf_counter() - started
    partitions = len(result.get_asset_materialization_events())
    instance.dispose()
    return partitions, seconds


def postgres_home(base: Path) -> tuple[Path, str] | None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"bench_events_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        return None
    finally:
        admin.dispose()
    home = base / "postgres_home"
    home.mkdir()
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_url": url}},
                                                      "telemetry": {"enabled": False}}))
    return home, name


def drop(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@click.command(help=__doc__.splitlines()[0])
@click.option("--shops", type=int, default=100, show_default=True)
@click.option("--days", type=int, default=7, show_default=True)
@click.option("--runs", type=int, default=3, show_default=True)
def main(**options: int) -> None:
    args = SimpleNamespace(**options)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        base = Path(tmp)
        for n in range(args.runs):
            sqlite_home = base / f"sqlite_{n}"
            sqlite_home.mkdir()
            (sqlite_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            partitions, sqlite_s = one_run(sqlite_home, args.shops, args.days)
            (base / f"pg_{n}").mkdir()
            pg = postgres_home(base / f"pg_{n}")
            pg_s = None
            if pg is not None:
                try:
                    _, pg_s = one_run(pg[0], args.shops, args.days)
                finally:
                    drop(pg[1])
            rows.append((partitions, sqlite_s, pg_s))
            print(f"run {n + 1}: {partitions} partitions, SQLite {sqlite_s:.1f} s"
                  + (f", Postgres {pg_s:.1f} s" if pg_s is not None else ", Postgres: no server"), flush=True)
    partitions = rows[0][0]
    print(f"\nDagster's bookkeeping, one no-op asset, a ranged run of {partitions:,} partitions "
          f"({args.shops} shops x {args.days} days), median of {args.runs}:")
    print(f"{'instance storage':<22} {'run (s)':>8} {'ms per partition':>17} {'x 6 assets (s)':>15}")
    for label, index in (("SQLite (default)", 1), ("dagster-postgres", 2)):
        values = [r[index] for r in rows if r[index] is not None]
        if not values:
            continue
        median = statistics.median(values)
        print(f"{label:<22} {median:>8.1f} {1000 * median / partitions:>17.1f} {6 * median:>15.0f}")


if __name__ == "__main__":
    main()
