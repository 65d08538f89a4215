"""Many days of every shop at once: ``make backfill ARGS="--days 30 --workers 2"``.

A client of Dagster's engine: it starts the local stack and ``dagster dev``, and launches through the
GraphQL API the UI uses ranged runs of ``shop_shift_job`` (sync, deliveries, sales, stock messages,
reports to ClickHouse, checks) of ``--days-per-run`` days over a group of shops each; the daemon's
run queue and run launcher run them, a process per run. Shops never share state, so the shops are
split into ``--workers`` groups, each with one run in flight at a time, in shift order, on the same
instance, shop databases, Kafka and ClickHouse. chDB lets one process open its directory at a time:
the ClickHouse client holds it only while a report is written, so the groups read their shop
databases side by side and take turns for the inserts. The same split is how the chain scales out
beyond one machine (docs/design.md#scaling-out).

The catalogue stays as the Sync API has it (no streamed changes, unlike ``make day``), unless
``--scenario`` names one: then each day's run of ``chain_catalogue_day_job`` first enters the chain's
changes of the day and delivers the scenario's faults on the stream, as a deployment's would, before
the shifts are sold; after them, each day's ``chain_late_changes_job`` enters its late changes and
``sold_again_sensor`` sells again the shifts they fall into, so the rows equal ``make day``'s.
Re-running a range replaces it, never doubles it. Starts the local stack unless the environment
names services.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select

from rossmann_local import commandline
from rossmann_local.commandline import ISO_DATE
from rossmann_local.defs import SHOP_SHIFT_JOB
from rossmann_local.defs.chain import CHAIN_DAY_JOB, CHAIN_DAY_STEP, CHAIN_LATE_JOB, CHAIN_LATE_STEP, late_changes_of
from rossmann_local.defs.partitions import PARTITION_TAG, partition_key, range_tags
from rossmann_local.defs.streaming import CATALOGUE_SENSOR, CATALOGUE_UPSERT_JOB, RUN_KIND_TAG, SOLD_AGAIN_SENSOR
from rossmann_local.domain.scenario import Scenario
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import World
from rossmann_local.local.dagster_ui import RUN_FINISHED, DagsterUI, RunOutcome, dagster_on, engine_time
from rossmann_local.local.day import preflight
from rossmann_local.local.stack import LocalStack, local_stack, scenario_env
from rossmann_local.reports.analytics import revenue_per_shop_per_day
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.settings import WORLD_FILE, ConfigError, load_world, shipped_scenarios
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
    """What one shop group's runs did, in order (run id, success, seconds, the first failure's cause)."""

    group: ShopGroup
    runs: list[tuple[str, bool, float, str]] = field(default_factory=list)

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


def finished(ui: DagsterUI, run_id: str, what: str) -> RunOutcome:
    """The run once it ended; a failed one stops the backfill, naming ``what`` it was."""
    ui.wait_for_run(run_id, timeout=600)
    outcome = ui.run(run_id)
    if not outcome.success:
        raise ConfigError(f"{what} failed: {outcome.failure()}")
    return outcome


def enter_chain_days(ui: DagsterUI, first_day: date, days: int) -> tuple[int, int]:
    """``chain_catalogue_day_job`` for each day, one after another (the catalogue's changes in the order the
    chain makes them); (changes entered, stream faults delivered). A failed day stops the backfill."""
    entered = delivered = 0
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        run_id = ui.launch_run(CHAIN_DAY_JOB, {PARTITION_TAG: day.isoformat()})
        outcome = finished(ui, run_id, f"{CHAIN_DAY_JOB} of {day}")
        figures = outcome.output(CHAIN_DAY_STEP) or {}
        entered += int(figures.get("changes", 0))
        delivered += int(figures.get("stream_faults", 0))
    return entered, delivered


def enter_late_days(ui: DagsterUI, world: World, scenario: Scenario, first_day: date, days: int) -> tuple[int, int]:
    """Once the days' shifts are sold, each day's ``chain_late_changes_job`` (a scenario's late changes,
    dated when they took effect), then the catalogue sensor's upsert runs and ``sold_again_sensor``'s
    runs selling again the shifts they fall into, all waited for; (late changes entered, shops' runs
    sold again). A failed run stops the backfill, naming it."""
    late_days = [d for d in (first_day + timedelta(days=n) for n in range(days)) if late_changes_of(scenario, world, d)]
    if not late_days:
        return 0, 0
    ui.wait_until_watching(SOLD_AGAIN_SENSOR)  # its first tick only starts watching
    since, entered = engine_time(), 0
    for day in late_days:
        outcome = finished(ui, ui.launch_run(CHAIN_LATE_JOB, {PARTITION_TAG: day.isoformat()}),
                           f"{CHAIN_LATE_JOB} of {day}")
        entered += int((outcome.output(CHAIN_LATE_STEP) or {}).get("late_changes", 0))
    ui.wait_for_tick(CATALOGUE_SENSOR, after=engine_time())  # their messages are on Kafka: it sees them
    for run in ui.runs(job=CATALOGUE_UPSERT_JOB, created_after=since):
        finished(ui, run["runId"], f"{CATALOGUE_UPSERT_JOB} run {run['runId']}")
    ui.wait_for_tick(SOLD_AGAIN_SENSOR, after=engine_time())  # every late version observed: it sees them
    sold_again = ui.runs(tags={RUN_KIND_TAG: "sold_again"}, created_after=since)
    for run in sold_again:
        finished(ui, run["runId"], f"{SHOP_SHIFT_JOB} run {run['runId']} (sold again)")
    return entered, len(sold_again)


def backfill(world: World, ui: DagsterUI, first_day: date, days: int, groups_count: int, days_per_run: int,
             quiet: bool = False) -> list[GroupRuns]:
    """Every shop's shifts of the days as runs launched through Dagster's run queue: each shop group
    has one run in flight at a time, in shift order (its next run is launched once the one before
    succeeded), the groups side by side as the queue's concurrency allows; a group stops at its first
    failed run (its next days would start from the stock that run should have left)."""
    spans = pieces(world, first_day, days, days_per_run)
    groups = shop_groups(world, groups_count)
    outcomes = {group: GroupRuns(group) for group in groups}
    waiting = {group: list(spans) for group in groups}

    def launch(group: ShopGroup) -> tuple[str, float]:
        first, last = waiting[group].pop(0)
        tags = range_tags(str(partition_key(first, group.first)), str(partition_key(last, group.last)))
        return ui.launch_run(SHOP_SHIFT_JOB, tags), time.perf_counter()

    running = {group: launch(group) for group in groups}
    while running:
        for group, (run_id, launched) in list(running.items()):
            status = ui.run_status(run_id)
            if status not in RUN_FINISHED:
                continue
            seconds = time.perf_counter() - launched  # bookkeeping: the run's wall time, queue included
            success = status == "SUCCESS"
            # A failure's cause is read from the run's events; a success needs none of its (many) events.
            cause = "" if success else ui.run(run_id).failure()
            outcomes[group].runs.append((run_id, success, seconds, cause))
            if not quiet:
                print(f"{group}: run {run_id[:8]} {'done' if success else 'FAILED'} in {seconds:.1f} s",
                      flush=True)
            del running[group]
            if success and waiting[group]:
                running[group] = launch(group)
        time.sleep(0.25)
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


@dataclass(frozen=True)
class BackfillOptions:
    """``make backfill``'s command line."""

    first_day: date | None = None
    days: int = 7
    workers: int = os.cpu_count() or 1
    days_per_run: int = 7
    scenario: str | None = None


@click.command(name="backfill", help="Backfill many days of every shop through Dagster, shop groups in parallel.")
@click.option("--from", "first_day", type=ISO_DATE, help="the first day (default: the world's first day)")
@click.option("--days", type=int, default=7, show_default=True, help="how many days")
@click.option("--workers", type=int, default=os.cpu_count() or 1,
              help="shop groups side by side, a run of each in flight (default: the machine's cores; the run "
                   "queue's max_concurrent_runs caps them)")
@click.option("--days-per-run", type=int, default=7, show_default=True, help="days per run of a shop group")
@click.option("--scenario", help=f"a shipped scenario ({', '.join(shipped_scenarios())}) or a TOML file: each "
              "day's changes and stream faults are entered first, its late changes after the shifts")
def backfill_command(**options: Any) -> int:
    return run_backfill(BackfillOptions(**options))


def main(argv: list[str] | None = None) -> int:
    return commandline.run(backfill_command, argv, "rossmann backfill")


def run_backfill(args: BackfillOptions) -> int:
    """``make backfill``: the days backfilled through Dagster, then the totals; the exit code."""
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
        ledger_resource = ScenarioLedger(scenario=args.scenario) if args.scenario else None
        scenario = ledger_resource.loaded() if ledger_resource is not None else None  # a bad one stops here
        started = time.perf_counter()  # bookkeeping: the command's wall time for its summary
        with local_stack(world, command="make backfill", scenario=ledger_resource) as stack:
            preflight(world, stack.resources)
            with dagster_on(stack, "make-backfill", **scenario_env(args.scenario)) as ui:
                chain = enter_chain_days(ui, first_day, args.days) if scenario is not None else None
                groups = backfill(world, ui, first_day, args.days, args.workers, args.days_per_run)
                late = enter_late_days(ui, world, scenario, first_day, args.days) \
                    if scenario is not None and not any(not r[1] for g in groups for r in g.runs) else None
            seconds = time.perf_counter() - started
            found = totals(world, stack, first_day, last_day)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped: the runs under way were canceled (their partitions are not materialized); "
              "run the same command again", file=sys.stderr)
        return 130
    partitions = len(world.shops) * sum(len(shifts_of_day(world, first_day + timedelta(days=d)))
                                        for d in range(args.days))
    failed = [(g.group, r) for g in groups for r in g.runs if not r[1]]
    print(f"\nBackfilled {first_day} .. {last_day}: {len(world.shops)} shops, {partitions:,} shop x shift partitions, "
          f"{len(groups)} shop group(s), {sum(len(g.runs) for g in groups)} runs, {seconds:.1f} s "
          f"({partitions / seconds:.1f} partitions/s)")
    if chain is not None and scenario is not None:
        print(f"  scenario {scenario.name} (seed {scenario.seed}): {chain[0]} catalogue changes entered and "
              f"{chain[1]} stream faults delivered by {CHAIN_DAY_JOB}, a run per day")
    if late is not None:
        print(f"  {late[0]} late catalogue changes entered by {CHAIN_LATE_JOB} after the shifts; "
              f"{late[1]} shop run(s) sold their shifts again ({SOLD_AGAIN_SENSOR})")
    print(f"  receipts: {found.receipts:,} in the shop databases, {found.reported_receipts:,} reported to ClickHouse")
    print(f"  revenue: {found.revenue:,.2f} EUR in the shop databases, {found.reported_revenue:,.2f} EUR reported")
    for group, (run_id, _, _, cause) in failed:
        print(f"  {group}: run {run_id} failed: {cause}", file=sys.stderr)
    matches = found.receipts == found.reported_receipts and found.revenue == found.reported_revenue
    if not matches:
        print("  the reports do not match the shop databases", file=sys.stderr)
    return 0 if not failed and matches else 1


if __name__ == "__main__":
    sys.exit(main())
