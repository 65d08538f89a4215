"""Many days of every shop at once: ``make backfill ARGS="--days 30 --workers 2"``.

Every shop x shift of the days goes through ``shop_shift_job`` (sync, deliveries, sales, stock
messages, reports to ClickHouse, checks), as runs of ``--days-per-run`` days over a group of shops
each: what a backfill launches under the assets' single-run policy. Shops never share state, so the
shops are split into ``--workers`` groups, each with one run in flight at a time, in shift order,
in a pool of ``--workers`` spawned processes (a core each; a process is replaced every
``RUNS_PER_WORKER_PROCESS`` runs, which keeps memory bounded), on the same instance, shop
databases, Kafka and ClickHouse. chDB lets one process open its directory at a time: the ClickHouse
client holds it only while a report is written, so the groups read their shop databases side by
side and take turns for the inserts. The same split is how the chain scales out beyond one machine
(docs/design.md#scaling-out).

The catalogue stays as the Sync API has it (no streamed changes, unlike ``make day``); re-running a
range replaces it, never doubles it. Starts the local stack unless the environment names services.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from rossmann_local.defs import SHOP_SHIFT_JOB, build_definitions, default_resources
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import World
from rossmann_local.local.day import first_failure, preflight, run_shifts
from rossmann_local.local.instance import managed_instance
from rossmann_local.local.stack import LocalStack, local_stack
from rossmann_local.reports.analytics import revenue_per_shop_per_day
from rossmann_local.settings import KAFKA_BOOTSTRAP_SERVERS, SYNC_API_URL, WORLD_FILE, ConfigError, load_world
from rossmann_local.shop_db.models import Transaction


@dataclass(frozen=True)
class ShopGroup:
    """The shops ``first``..``last`` (ids, inclusive): one worker's share."""

    first: int
    last: int

    def __str__(self) -> str:
        return f"shops {self.first}-{self.last}" if self.first != self.last else f"shop {self.first}"


def shop_groups(world: World, workers: int) -> list[ShopGroup]:
    """The shops in ``workers`` contiguous groups of nearly equal size (fewer if there are fewer shops)."""
    ids = list(world.shop_ids)
    count = max(1, min(workers, len(ids)))
    size, extra = divmod(len(ids), count)
    groups, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        groups.append(ShopGroup(ids[start], ids[end - 1]))
        start = end
    return groups


def pieces(world: World, first_day: date, days: int, days_per_run: int) -> list[tuple[ShiftWindow, ShiftWindow]]:
    """(first shift, last shift) of each run: ``days_per_run`` days at a time, in order."""
    out = []
    for offset in range(0, days, days_per_run):
        span = [s for d in range(offset, min(days, offset + days_per_run))
                for s in shifts_of_day(world, first_day + timedelta(days=d))]
        out.append((span[0], span[-1]))
    return out


@dataclass
class GroupRuns:
    """What one worker did: its runs in order (run id, success, seconds, the first failure's cause)."""

    group: ShopGroup
    runs: list[tuple[str, bool, float, str]] = field(default_factory=list)
    peak_rss_mib: float = 0.0

    @property
    def succeeded(self) -> bool:
        return all(ok for _, ok, _, _ in self.runs)


def _status_mib(field: str, pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's high-water mark of resident memory (VmHWM), in MiB (this process by default)."""
    return _status_mib("VmHWM", pid)


def resident_mib() -> float:
    """This process's resident memory now (VmRSS), in MiB."""
    return _status_mib("VmRSS")


def run_group(world: World, group: ShopGroup, spans: Sequence[tuple[ShiftWindow, ShiftWindow]],
              resources: dict[str, Any] | None = None, environment: dict[str, str] | None = None,
              quiet: bool = False) -> GroupRuns:
    """The group's runs, one per span, in order; stops at the first failed run (the next spans start
    from the stock it would have left). A worker process is given the parent's ``environment`` and
    builds its resources from it."""
    if environment is not None:
        os.environ.update(environment)
    job = build_definitions(world, resources or default_resources()).resolve_job_def(SHOP_SHIFT_JOB)
    instance = managed_instance()
    done = GroupRuns(group)
    for first, last in spans:
        started = time.perf_counter()  # bookkeeping: how long the run took on the wall clock
        result = run_shifts(job, instance, world, first, last, first_shop=world.shop(group.first),
                            last_shop=world.shop(group.last))
        seconds = time.perf_counter() - started
        done.runs.append((result.run_id, result.success, seconds, "" if result.success else first_failure(result)))
        if not quiet:
            print(f"{group}: {first.local_date} .. {last.local_date} "
                  f"{'done' if result.success else 'FAILED'} in {seconds:.1f} s (run {result.run_id[:8]}, "
                  f"memory {resident_mib():.0f} MiB)", flush=True)
        del result  # a run's result holds all its events: drop it before the next run
        if not done.runs[-1][1]:
            break
    done.peak_rss_mib = peak_rss_mib()
    return done


# A worker process is replaced after this many runs. Its resident memory grew by 30-40 MiB per 7-day
# run of 50 shops, run after run (1.0 GiB after the first, 1.5 GiB after the eleventh), while its
# Python objects did not grow: the growth is native, mostly chDB's engine, which keeps 1-2 MiB more
# on each open and close of a client (a report step opens it a few times, to write). A process per
# few runs keeps a year's backfill at the memory of its first runs.
RUNS_PER_WORKER_PROCESS = 4


def backfill(world: World, stack: LocalStack, first_day: date, days: int, workers: int, days_per_run: int,
             quiet: bool = False) -> list[GroupRuns]:
    """Every shop's shifts of the days, the shop groups side by side in worker processes: each group
    has one run in flight at a time, in shift order, and stops at its first failed run. A single run
    of a single group runs in this process."""
    spans = pieces(world, first_day, days, days_per_run)
    groups = shop_groups(world, workers)
    managed_instance()  # the instance (DAGSTER_HOME) the workers share, set up once
    if len(groups) == 1 and len(spans) == 1:
        return [run_group(world, groups[0], spans, stack.resources, quiet=quiet)]
    environment = dict(os.environ)
    environment[KAFKA_BOOTSTRAP_SERVERS] = stack.kafka.bootstrap_servers
    environment[SYNC_API_URL] = stack.sync_api.base_url
    outcomes = {group: GroupRuns(group) for group in groups}
    waiting = {group: list(spans) for group in groups}
    # Spawned, not forked: the parent holds threads (the broker's and the stand-in's) and sockets.
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=RUNS_PER_WORKER_PROCESS) as pool:

        def next_run(group: ShopGroup) -> Future[GroupRuns]:
            return pool.submit(run_group, world, group, [waiting[group].pop(0)], None, environment, quiet)

        running = {next_run(group): group for group in groups}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                group = running.pop(future)
                done = future.result()
                outcomes[group].runs += done.runs
                outcomes[group].peak_rss_mib = max(outcomes[group].peak_rss_mib, done.peak_rss_mib)
                if done.succeeded and waiting[group]:
                    running[next_run(group)] = group
    return [outcomes[group] for group in groups]


@dataclass(frozen=True)
class Totals:
    receipts: int
    revenue: Decimal
    reported_receipts: int
    reported_revenue: Decimal


def totals(world: World, stack: LocalStack, first_day: date, last_day: date) -> Totals:
    """Receipts and revenue of the days in the shop databases and in ClickHouse's report."""
    start = min(s.start for s in shifts_of_day(world, first_day))
    end = max(s.end for s in shifts_of_day(world, last_day))
    receipts, revenue = 0, Decimal("0")
    for shop in world.shops:
        with stack.shop_databases.transaction(shop.shop_id) as conn:
            count, total = conn.execute(
                select(func.count(), func.coalesce(func.sum(Transaction.total_amount), 0))
                .where(Transaction.transaction_time >= start, Transaction.transaction_time < end)).one()
        receipts, revenue = receipts + count, revenue + Decimal(total)
    stack.shop_databases.dispose()
    with stack.clickhouse.client() as client:
        reported = revenue_per_shop_per_day(client, world.timezone, first_day, last_day)
    return Totals(receipts, revenue, sum(r.receipts for r in reported),
                  sum((r.revenue for r in reported), Decimal("0")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Backfill many days of every shop through Dagster, "
                                                 "shop groups in parallel.")
    parser.add_argument("--from", dest="first_day", type=date.fromisoformat,
                        help="YYYY-MM-DD (default: the world's first day)")
    parser.add_argument("--days", type=int, default=7, help="how many days (default 7)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes, one shop group each (default: the machine's cores)")
    parser.add_argument("--days-per-run", type=int, default=7, help="days per run of a shop group (default 7)")
    args = parser.parse_args(argv)
    try:
        world = load_world()
        first_day = args.first_day or world.start_date
        for name, value in (("--days", args.days), ("--workers", args.workers), ("--days-per-run", args.days_per_run)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        last_day = first_day + timedelta(days=args.days - 1)
        if not world.start_date <= first_day <= last_day <= world.end_date:
            raise ConfigError(f"--from {first_day} --days {args.days} is outside the world's days, {world.start_date} "
                              f"to {world.end_date} (start_date and days in {WORLD_FILE})")
        started = time.perf_counter()  # bookkeeping: the command's wall time for its summary
        with local_stack(world, command="make backfill") as stack:
            preflight(world, stack.resources)
            groups = backfill(world, stack, first_day, args.days, args.workers, args.days_per_run)
            seconds = time.perf_counter() - started
            found = totals(world, stack, first_day, last_day)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    partitions = len(world.shops) * sum(len(shifts_of_day(world, first_day + timedelta(days=d)))
                                        for d in range(args.days))
    failed = [(g, r) for g in groups for r in g.runs if not r[1]]
    print(f"\nBackfilled {first_day} .. {last_day}: {len(world.shops)} shops, {partitions:,} shop x shift partitions, "
          f"{len(groups)} worker(s), {sum(len(g.runs) for g in groups)} runs, {seconds:.1f} s "
          f"({partitions / seconds:.1f} partitions/s)")
    print(f"  receipts: {found.receipts:,} in the shop databases, {found.reported_receipts:,} reported to ClickHouse")
    print(f"  revenue: {found.revenue:,.2f} EUR in the shop databases, {found.reported_revenue:,.2f} EUR reported")
    print(f"  peak memory per worker: {', '.join(f'{g.peak_rss_mib:.0f} MiB' for g in groups)}")
    for group, (run_id, _, _, cause) in failed:
        print(f"  {group}: run {run_id} failed: {cause}", file=sys.stderr)
    matches = found.receipts == found.reported_receipts and found.revenue == found.reported_revenue
    if not matches:
        print("  the reports do not match the shop databases", file=sys.stderr)
    return 0 if not failed and matches else 1


if __name__ == "__main__":
    sys.exit(main())
