"""The main command: one simulated day of every shop, run through Dagster on the no-service defaults.

``python -m rossmann_local.local.day [--day YYYY-MM-DD]`` (``make day``) starts the local stack (a
Kafka broker and the stand-in Sync API on loopback, unless the environment names its own), uses the
Dagster instance under ``ROSSMANN_DATA_DIR`` (unless ``DAGSTER_HOME`` is set), and runs
``shop_shift_job`` once per shift over every shop (sync, deliveries, sales, stock messages, reports
to ClickHouse). Between the shifts the chain changes its catalogue (``chain_admin``); the changes
travel through Kafka, and the catalogue sensor, ticked here with the cursor the daemon keeps in the
instance, requests the upsert runs that apply them. It prints a per-shop summary read back from the
shop databases, ClickHouse's totals beside them, and what streaming did. Re-running a day replaces
it, never doubles it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import dagster as dg

from rossmann_local.defs import SHOP_SHIFT_JOB, build_definitions
from rossmann_local.defs.partitions import partition_key, range_tags
from rossmann_local.defs.scenario_assets import day_asset
from rossmann_local.domain.catalogue_changes import PROMOTIONS, CatalogueChange
from rossmann_local.domain.scenario import Scenario, day_changes, plan_day
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import Shop, World
from rossmann_local.local import chain_admin
from rossmann_local.local.catalogue_sensor import CATALOGUE_SENSOR, CatalogueSensorDriver
from rossmann_local.local.chain_admin import inject_stream_faults
from rossmann_local.local.instance import InstanceSensorCursor, managed_instance
from rossmann_local.local.processes import GracefulStop, StopRequested
from rossmann_local.local.stack import LocalStack, local_stack
from rossmann_local.local.summary import ShopDay, Streaming, format_summary, read_shop_days
from rossmann_local.resources.clickhouse import redacted
from rossmann_local.resources.scenario_ledger import ScenarioLedger, scenario_ledger_from_env
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import SCENARIO, WORLD_FILE, ConfigError, data_dir, load_world, shipped_scenarios
from rossmann_local.shop.stock import settle_and_verify
from rossmann_local.shop_db import ledger
from rossmann_local.sync_api.store import CatalogueStore

# make day runs far faster than the clock: a scenario's broker pause of N simulated minutes holds the
# broker for N x 0.2 s of wall time, long enough to cover the shift's first Kafka work.
PAUSE_SECONDS_PER_SIMULATED_MINUTE = 0.2
# The summary reports failed runs with their cause; Dagster's console log would repeat each with stack traces.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def preflight(world: World, resources: dict[str, Any]) -> None:
    """Open every shop database and ClickHouse once before the day: a wrong setting stops the command
    with its name, instead of failing (and retrying) every run of the day."""
    shop_databases: ShopDatabases = resources["shop_databases"]
    for shop in world.shops:
        shop_databases.engine(shop.shop_id)
    shop_databases.dispose()
    with resources["clickhouse"].client():
        pass


def first_failure(result: dg.ExecuteInProcessResult) -> str:
    """The root cause of the first failed step, as one line."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            return f"{event.step_key}: {error.cls_name}: {error.message.strip().splitlines()[0]}"
    return "run failed"


def run_shifts(job: dg.JobDefinition, instance: dg.DagsterInstance, world: World, first: ShiftWindow,
               last: ShiftWindow, assets: list[str] | None = None, *, first_shop: Shop | None = None,
               last_shop: Shop | None = None) -> dg.ExecuteInProcessResult:
    """Every shop's shifts from ``first`` to ``last`` in one run (of the named ``assets`` only, if
    given; of the shops from ``first``/``last`` shop only, if given): what a backfill launches under
    the assets' single-run backfill policy, one run for the whole range instead of a process per
    partition."""
    first_shop = first_shop or world.shops[0]
    last_shop = last_shop or world.shops[-1]
    tags = range_tags(str(partition_key(first, first_shop.shop_id)), str(partition_key(last, last_shop.shop_id)))
    selection = [dg.AssetKey(name) for name in assets] if assets else None
    return job.execute_in_process(instance=instance, tags=tags, run_config=QUIET_RUN_CONFIG, raise_on_error=False,
                                  asset_selection=selection)


def run_day(world: World, day: date, resources: dict[str, Any], instance: dg.DagsterInstance,
            feed: Callable[[int], None] | None = None, stop: GracefulStop | None = None,
            check: Callable[[], None] | None = None,
            after_shifts: Callable[[], set[tuple[int, datetime]]] | None = None) -> list[ShopDay]:
    """Every shift of the day for every shop: one run of the partitioned job per shift, covering all
    shops. ``feed(i)`` runs before shift ``i`` (catalogue changes and their upsert runs). With
    ``stop``, the work runs where a signal cannot interrupt it, and a stop request ends the day
    between shifts (``StopRequested``). ``check()`` runs before each shift and before a failed shift
    is run again shop by shop; it raises to end the day (e.g. the local broker died)."""
    job = build_definitions(world, resources).resolve_job_def(SHOP_SHIFT_JOB)
    days = {s.shop_id: ShopDay(s.shop_id, s.city) for s in world.shops}
    shifts = shifts_of_day(world, day)

    def call(work: Callable[[], Any]) -> Any:
        return stop.call(work) if stop is not None else work()

    def run(shift: ShiftWindow, first: Shop, last: Shop) -> dg.ExecuteInProcessResult:
        return call(lambda: run_shifts(job, instance, world, shift, shift, first_shop=first, last_shop=last))

    for index, shift in enumerate(shifts):
        if stop is not None:
            stop.check(f"before the shift of {shift.start:%Y-%m-%d %H:%M} (the shifts before it are complete)")
        if check is not None:
            check()
        if feed is not None:
            call(lambda index=index: feed(index))
        result = run(shift, world.shops[0], world.shops[-1])
        outcomes = {shop.shop_id: result for shop in world.shops}
        if not result.success and check is not None:
            check()
        if not result.success and len(world.shops) > 1:
            # One shop's failure fails only that shop's partitions: the shift runs again shop by shop
            # (every step is idempotent), so the others' partitions are materialized by runs of their own.
            outcomes = {shop.shop_id: run(shift, shop, shop) for shop in world.shops}
        for shop_id, outcome in outcomes.items():
            if outcome.success:
                days[shop_id].runs_ok += 1
            else:
                days[shop_id].runs_failed.append(f"{shift.start:%Y-%m-%d %H:%M}: {first_failure(outcome)}")
    if after_shifts is not None:
        # A late catalogue version fell into shifts sold already: each such shop's shifts are sold
        # again from the first one touched, in order (a later shift opens with the stock it leaves).
        touched = call(after_shifts)
        for shop in world.shops:
            starts = [start for shop_id, start in touched if shop_id == shop.shop_id]
            for shift in [s for s in shifts if starts and s.start >= min(starts)]:
                outcome = run(shift, shop, shop)
                days[shop.shop_id].shifts_sold_again += 1
                if not outcome.success:
                    days[shop.shop_id].runs_failed.append(f"{shift.start:%Y-%m-%d %H:%M} (sold again): "
                                                          f"{first_failure(outcome)}")
    # The summary counts what the topic holds: every stock message is read back once the broker had
    # time to keep it, and what it lost is sent again.
    working = [shop_id for shop_id, shop_day in days.items() if shop_day.runs_ok]
    checked = settle_and_verify(working, resources["shop_databases"], resources["kafka"])
    for shop_id, lost in checked.lost_by_shop.items():
        days[shop_id].stock_parts_resent = lost
    read_shop_days(world, resources["shop_databases"], resources["clickhouse"], day, shifts, days)
    return list(days.values())


class BrokerLost(ConfigError):
    """The local broker died during the day: the day stops at once, saying so."""


class CatalogueDemo:
    """The chain's side during the day: catalogue changes through the stand-in's outbox to Kafka,
    then a sensor tick and its upsert runs, as the daemon would do them."""

    def __init__(self, stack: LocalStack, instance: dg.DagsterInstance, scenario: Scenario | None = None) -> None:
        self.stack, self.scenario = stack, scenario
        self.sensor = CatalogueSensorDriver(build_definitions(stack.world, stack.resources), instance,
                                            InstanceSensorCursor(instance, CATALOGUE_SENSOR), QUIET_RUN_CONFIG)
        self.streaming = Streaming()
        self.touched: set[tuple[int, datetime]] = set()  # (shop, shift start) a late version fell into

    def publish(self, day: date) -> None:
        store = self.stack.store
        if store is None:
            return  # an external Sync API: its own admin side changes its catalogue
        plan = plan_day(self.scenario, self.stack.world, day) if self.scenario is not None else None
        # A scenario's late changes are held back until the day's shifts are sold (``after_shifts``).
        changes = plan.changes if plan is not None else day_changes(None, self.stack.world, day)
        self.enter(store, changes)
        if plan is not None:
            self.streaming.scenario_faults = inject_stream_faults(store, self.stack.kafka, plan.faults)

    def enter(self, store: CatalogueStore, changes: Sequence[CatalogueChange]) -> None:
        """The changes made in the stand-in, then waited for until its relay published them all."""
        self.streaming.changes_published += chain_admin.make_changes(store, changes)
        deadline = time.monotonic() + 60
        while store.unpublished() and time.monotonic() < deadline:
            time.sleep(0.05)

    def check_expected(self, day: date) -> None:
        """The day's expected answers, materialized as the ``expected_answers`` asset's partition, and
        its check's verdict on the reports."""
        expected = day_asset(self.stack.world, "expected_answers")
        resources = {name: self.stack.resources[name] for name in ("sync_api", "clickhouse", "shop_databases")}
        result = dg.materialize([expected], partition_key=day.isoformat(), instance=self.sensor.instance,
                                resources=resources, run_config=QUIET_RUN_CONFIG, raise_on_error=False)
        if not result.success:
            self.streaming.failed_runs.append(f"expected_answers {day}: {first_failure(result)}")
            return
        [evaluation] = result.get_asset_check_evaluations()
        # A warning (a day run without the days before it) is said, and does not fail the day.
        warning = evaluation.severity == dg.AssetCheckSeverity.WARN
        self.streaming.expected = ("" if evaluation.passed or warning else "FAILED: ") + (evaluation.description or "")
        self.streaming.expected_passed = evaluation.passed or warning

    def write_ledger(self, day: date, ledger: ScenarioLedger) -> None:
        """The day's scenario ledger, materialized as the ``scenario_ledger`` asset's partition."""
        if self.scenario is None:
            return
        result = dg.materialize([day_asset(self.stack.world, "scenario_ledger")], partition_key=day.isoformat(),
                                instance=self.sensor.instance, resources={"scenario_ledger": ledger},
                                run_config=QUIET_RUN_CONFIG, raise_on_error=False)
        if not result.success:
            self.streaming.failed_runs.append(f"scenario_ledger {day}: {first_failure(result)}")
            return
        self.streaming.scenario = f"{self.scenario.name} (seed {self.scenario.seed})"
        self.streaming.ledger_counts = ledger.counts(day)
        self.streaming.ledger_table = ledger.describe()

    def apply(self) -> None:
        for request, run in self.sensor.tick_and_run():
            self.streaming.upsert_runs += 1
            if not run.success:
                self.streaming.failed_runs.append(f"{request.run_key}: {first_failure(run)}")
                continue
            self.streaming.outcome.update(run.output_for_node("apply_catalogue_changes"))
            self.touched.update((shop_id, datetime.fromisoformat(start)) for shop_id, start in
                                run.output_for_node("apply_catalogue_changes", "sold_shifts_touched"))

    def before_shift(self, day: date, index: int) -> None:
        """Before the afternoon, the chain publishes the day's promotion (and a malformed message);
        before every shift, the sensor ticks and its upsert runs apply what arrived."""
        if index == 1:
            self.publish(day)
            if self.scenario is None:  # a scenario brings its own malformed messages, in its ledger
                chain_admin.inject_malformed_message(self.stack.kafka)
        self.apply()
        if self.scenario is not None:
            self.begin_outages(day, index)

    def after_shifts(self, day: date) -> set[tuple[int, datetime]]:
        """After the day's shifts: the scenario's late changes entered (dated when they took effect),
        and applied; returns the sold shifts they fall into, to be sold again."""
        store = self.stack.store
        if self.scenario is None or store is None:
            return set()
        late = plan_day(self.scenario, self.stack.world, day).late
        if not late:
            return set()
        self.enter(store, late)
        self.apply()
        touched, self.touched = self.touched, set()
        return touched

    def begin_outages(self, day: date, index: int) -> None:
        """A scenario's Sync API outage and broker pause, from this shift's start (its run follows)."""
        scenario, store, broker = self.scenario, self.stack.store, self.stack.broker
        assert scenario is not None
        if scenario.outage_shift(day) == index and scenario.sync_api_outage:
            if store is None:
                self.streaming.not_applied.append("the Sync API outage: the Sync API is not the local stand-in")
            else:
                store.go_down(scenario.sync_api_outage.refused_requests)
        if scenario.pause_shift(day) == index and scenario.broker_pause:
            if broker is None:
                self.streaming.not_applied.append("the broker pause: the broker is not the local one")
            else:
                seconds = scenario.broker_pause.minutes * PAUSE_SECONDS_PER_SIMULATED_MINUTE
                broker.pause(seconds)
                self.streaming.applied.append(f"the broker paused for {seconds:g} s of wall time before the shift "
                                              f"of {shifts_of_day(self.stack.world, day)[index].start:%H:%M}")

    def check_broker(self) -> None:
        """Stop the day at once when the local broker died (instead of every run waiting it out)."""
        if self.stack.broker is not None:
            try:
                self.stack.broker.check_alive()
            except RuntimeError as exc:
                raise BrokerLost(str(exc)) from None

    def promotion_prices(self, day: date) -> list[str]:
        """For each promoted product, the unit prices its receipts charged in each shift of one shop of its city."""
        if self.stack.store is None:
            return []
        world, shop_databases = self.stack.world, self.stack.shop_databases
        lines = []
        for product_id, city, _factor in PROMOTIONS:
            shop = next(s for s in world.shops if s.city == city)
            with shop_databases.transaction(shop.shop_id) as conn:
                prices = [[str(p) for p in ledger.unit_prices_charged(conn, shift, product_id)]
                          for shift in shifts_of_day(world, day)]
            lines.append(f"  product {product_id} in {city} (shop {shop.shop_id}): receipts charged "
                         + " then ".join("/".join(p) or "nothing" for p in prices))
        shop_databases.dispose()
        return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulate one day of every shop through Dagster.")
    parser.add_argument("--day", type=date.fromisoformat, help="YYYY-MM-DD (default: the world's first day)")
    parser.add_argument("--scenario", help=f"a shipped scenario ({', '.join(shipped_scenarios())}) or a TOML file "
                        f"(default: {SCENARIO}, else none)")
    args = parser.parse_args(argv)
    try:
        world = load_world()
        ledger = ScenarioLedger(scenario=args.scenario) if args.scenario else scenario_ledger_from_env()
        scenario = ledger.loaded()
        day = args.day or world.start_date
        if not world.start_date <= day <= world.end_date:
            raise ConfigError(f"--day {day} is outside the world's days, {world.start_date} to {world.end_date} "
                              f"(start_date and days in {WORLD_FILE})")
        started = time.perf_counter()
        with GracefulStop() as stop, local_stack(world, command="make day") as stack:
            preflight(world, stack.resources)
            demo = CatalogueDemo(stack, managed_instance(), scenario)
            shop_days = run_day(world, day, stack.resources, demo.sensor.instance,
                                lambda index: demo.before_shift(day, index), stop, demo.check_broker,
                                lambda: demo.after_shifts(day))
            demo.streaming.promotion_prices = demo.promotion_prices(day)
            demo.write_ledger(day, ledger)
            demo.check_expected(day)
            if stack.store is not None and stack.store.syncs_refused:
                demo.streaming.applied.append(f"the Sync API refused {stack.store.syncs_refused} sync request(s) "
                                              "(503); the shops' sync retried")
        summary = format_summary(day, shop_days, time.perf_counter() - started,
                                 redacted(stack.clickhouse.resolved_dsn()), demo.streaming)
        print(summary)
        print(f"Data: {data_dir()}  (Dagster UI on the same data: make dev)")
    except BrokerLost as exc:
        print(f"stopped: {exc}; the shifts before it are complete, run the same command again", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except StopRequested as exc:
        print(f"{exc}; run the same command again to finish the day", file=sys.stderr)
        return 143
    failed = (any(d.runs_failed or not d.reports_match for d in shop_days) or demo.streaming.failed_runs
              or not demo.streaming.expected_passed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
