"""The main command: one simulated day of every shop, run by Dagster's own engine on the no-service defaults.

``python -m rossmann_local.local.day [--day YYYY-MM-DD]`` (``make day``) starts the local stack (a
Kafka broker and the stand-in Sync API on loopback, unless the environment names its own) and
``dagster dev`` (webserver, daemon, code server) on the instance under ``ROSSMANN_DATA_DIR`` (unless
``DAGSTER_HOME`` is set). It is a client of that engine, through the GraphQL API the UI uses: it
launches ``shop_shift_job`` once per shift over every shop (the run queue and run launcher run it),
and between the shifts the chain changes its catalogue in the stand-in; the changes travel through
Kafka, and the daemon's catalogue sensor requests the upsert runs that apply them. A late version
the scenario enters after the day is re-sold by ``sold_again_sensor``, and ``day_answers_sensor``
materializes the expected answers once the day's reports are in: the command waits for their ticks
and runs. It prints a per-shop summary read back from the shop databases, ClickHouse's totals beside
them, and what streaming did. Re-running a day replaces it, never doubles it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any, TypeVar

import click

from rossmann_local import commandline
from rossmann_local.commandline import ISO_DATE
from rossmann_local.defs import SHOP_SHIFT_JOB
from rossmann_local.defs.chain import CHAIN_LATE_JOB, CHAIN_LATE_STEP
from rossmann_local.defs.partitions import (
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    partition_key,
    range_tags,
    shop_and_shift,
)
from rossmann_local.defs.scenario_assets import DAY_SENSOR
from rossmann_local.defs.streaming import (
    CATALOGUE_SENSOR,
    CATALOGUE_UPSERT_JOB,
    RUN_KEY_TAG,
    RUN_KIND_TAG,
    SOLD_AGAIN_SENSOR,
)
from rossmann_local.domain.catalogue_changes import PROMOTIONS, CatalogueChange
from rossmann_local.domain.scenario import Scenario, day_changes, plan_day
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import World
from rossmann_local.local import chain_admin
from rossmann_local.local.chain_admin import inject_stream_faults
from rossmann_local.local.dagster_ui import DagsterUI, RunOutcome, dagster_on, engine_time
from rossmann_local.local.dry_run import dry_run
from rossmann_local.local.processes import GracefulStop, StopRequested
from rossmann_local.local.stack import LocalStack, local_stack, scenario_env
from rossmann_local.local.summary import ShopDay, Streaming, format_summary, read_shop_days
from rossmann_local.resources.clickhouse import redacted
from rossmann_local.resources.scenario_ledger import ScenarioLedger, scenario_ledger_from_env
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import SCENARIO, WORLD_FILE, ConfigError, data_dir, load_world, shipped_scenarios
from rossmann_local.shop.stock import settle_and_verify
from rossmann_local.shop_db import ledger
from rossmann_local.sync_api.store import CatalogueStore

# The per-day assets the day sensor materializes (Dagster's implicit job of all assets runs a selection).
DAY_ASSETS = ("scenario_ledger", "expected_answers")
ASSET_JOB = "__ASSET_JOB"
# make day runs far faster than the clock: a scenario's broker pause of N simulated minutes holds the
# broker for N x 0.2 s of wall time, long enough to cover the shift's first Kafka work.
PAUSE_SECONDS_PER_SIMULATED_MINUTE = 0.2
T = TypeVar("T")


def preflight(world: World, resources: dict[str, Any]) -> None:
    """Open every shop database and ClickHouse once before the day: a wrong setting stops the command
    with its name, instead of failing (and retrying) every run of the day."""
    shop_databases: ShopDatabases = resources["shop_databases"]
    for shop in world.shops:
        shop_databases.engine(shop.shop_id)
    shop_databases.dispose()
    with resources["clickhouse"].client():
        pass


class BrokerLost(ConfigError):
    """The local broker died during the day: the day stops at once, saying so."""


class DayThroughDagster:
    """One day of the chain, driven through a running Dagster: the runs it launches, the sensors'
    ticks and runs it waits for, and the chain's side (catalogue changes, a scenario's faults) it
    plays in the local stack between them."""

    def __init__(self, stack: LocalStack, ui: DagsterUI, day: date, scenario: Scenario | None = None,
                 stop: GracefulStop | None = None) -> None:
        self.stack, self.ui, self.day, self.scenario, self.stop = stack, ui, day, scenario, stop
        self.world = stack.world
        self.shifts = shifts_of_day(self.world, day)
        self.days = {s.shop_id: ShopDay(s.shop_id, s.city) for s in self.world.shops}
        self.streaming = Streaming()
        self.started = engine_time()  # which runs and ticks are this command's
        self.last_shift_end = 0.0  # when the day's last shop x shift run ended (Unix time)

    def call(self, work: Callable[[], T]) -> T:
        return self.stop.call(work) if self.stop is not None else work()

    def finished(self, run_id: str) -> RunOutcome:
        """The run's outcome once it ended; the day stops at once if the local broker dies meanwhile
        (the run would otherwise wait out its Kafka timeouts and retries before failing)."""
        self.ui.wait_for_run(run_id, timeout=900, watch=self.check_broker)
        return self.ui.run(run_id)

    def run_day(self) -> list[ShopDay]:
        for index, shift in enumerate(self.shifts):
            if self.stop is not None:
                self.stop.check(f"before the shift of {shift.start:%Y-%m-%d %H:%M} (the shifts before it are complete)")
            self.check_broker()
            self.call(lambda index=index: self.before_shift(index))
            self.call(lambda shift=shift: self.sell(shift))
        self.call(self.after_shifts)
        self.call(self.check_expected)
        return self.read_back()

    def sell(self, shift: ShiftWindow) -> None:
        """The shift of every shop in one run; when it fails, the shift again shop by shop (every step
        is idempotent), so one shop's failure fails only that shop's partitions."""
        shops = self.world.shops
        first, last = partition_key(shift, shops[0].shop_id), partition_key(shift, shops[-1].shop_id)
        outcome = self.finished(self.ui.launch_run(SHOP_SHIFT_JOB, range_tags(str(first), str(last))))
        outcomes = {shop.shop_id: outcome for shop in shops}
        if not outcome.success:
            self.check_broker()
            if len(shops) > 1:
                launched = {shop.shop_id: self.ui.launch_partition_run(
                    SHOP_SHIFT_JOB, str(key := partition_key(shift, shop.shop_id)), key.keys_by_dimension)
                    for shop in shops}
                outcomes = {shop_id: self.finished(run_id) for shop_id, run_id in launched.items()}
        for shop_id, result in outcomes.items():
            if result.success:
                self.days[shop_id].runs_ok += 1
            else:
                self.days[shop_id].runs_failed.append(f"{shift.start:%Y-%m-%d %H:%M}: {result.failure()}")
            self.last_shift_end = max(self.last_shift_end, result.end_time or engine_time())

    def before_shift(self, index: int) -> None:
        """Before the afternoon, the chain publishes the day's promotion (and a malformed message),
        and the catalogue sensor's upsert runs apply them; a scenario's outages start with their shift."""
        if index == 1:
            since = engine_time()
            self.publish()
            if self.scenario is None:  # a scenario brings its own malformed messages, in its ledger
                chain_admin.inject_malformed_message(self.stack.kafka, self.stack.provenance)
            self.apply_catalogue(since)
        if self.scenario is not None:
            self.begin_outages(index)

    def publish(self) -> None:
        store = self.stack.store
        if store is None:
            return  # an external Sync API: its own admin side changes its catalogue
        plan = plan_day(self.scenario, self.world, self.day) if self.scenario is not None else None
        # A scenario's late changes are held back until the day's shifts are sold (``after_shifts``).
        changes = plan.changes if plan is not None else day_changes(None, self.world, self.day)
        self.enter(store, changes)
        if plan is not None:
            self.streaming.scenario_faults = inject_stream_faults(store, self.stack.kafka, plan.faults,
                                                                  self.stack.provenance)

    def enter(self, store: CatalogueStore, changes: Sequence[CatalogueChange]) -> None:
        """The changes made in the stand-in, then waited for until its relay published them all."""
        self.streaming.changes_published += chain_admin.make_changes(store, changes)
        self.wait_until_published(store)

    def wait_until_published(self, store: CatalogueStore, timeout: float = 60) -> None:
        """Until the stand-in's relay has published every change entered (its outbox is empty), or the
        local broker it publishes to died."""
        deadline = time.monotonic() + timeout
        while store.unpublished() and time.monotonic() < deadline:
            self.check_broker()
            time.sleep(0.05)

    def apply_catalogue(self, since: float) -> None:
        """The catalogue sensor's first tick after everything was published, and every upsert run it
        (or a tick before it) requested since ``since``, waited for."""
        self.ui.wait_for_tick(CATALOGUE_SENSOR, after=engine_time())
        for run in reversed(self.ui.runs(job=CATALOGUE_UPSERT_JOB, created_after=since)):
            outcome = self.finished(run["runId"])
            self.streaming.upsert_runs += 1
            if not outcome.success:
                self.streaming.failed_runs.append(f"{outcome.tags.get(RUN_KEY_TAG, outcome.run_id)}: "
                                                  f"{outcome.failure()}")
                continue
            result = outcome.output("apply_catalogue_changes") or {}
            # A run's count of sold shifts touched does not add up over runs (two runs may touch one
            # shift): the shifts themselves are gathered instead.
            self.streaming.outcome.update({k: v for k, v in result.items()
                                           if isinstance(v, int) and k != "late_for_sold_shifts"})
            touched = outcome.output("apply_catalogue_changes", "sold_shifts_touched") or {}
            self.streaming.sold_shifts_touched.update((shop, start) for shop, start in touched.get("shifts", []))

    def after_shifts(self) -> None:
        """After the day's shifts: the scenario's late changes entered (dated when they took effect)
        and applied; the sold shifts they fall into are sold again by the daemon's sold-again sensor."""
        store = self.stack.store
        if self.scenario is None or store is None:
            return
        if not plan_day(self.scenario, self.world, self.day).late:
            return
        self.wait_until_watching(SOLD_AGAIN_SENSOR)
        since = engine_time()
        entered = self.finished(self.ui.launch_run(CHAIN_LATE_JOB, {PARTITION_TAG: self.day.isoformat()}))
        if not entered.success:
            self.streaming.failed_runs.append(f"{CHAIN_LATE_JOB} {self.day}: {entered.failure()}")
            return
        self.streaming.changes_published += int((entered.output(CHAIN_LATE_STEP) or {}).get("late_changes", 0))
        self.wait_until_published(store)
        self.apply_catalogue(since)
        touched = len(self.streaming.sold_shifts_touched)
        if not touched:
            return
        if self.ui.sensor(SOLD_AGAIN_SENSOR, ticks=0)["status"] != "RUNNING":
            self.streaming.applied.append(f"{touched} sold shop x shifts a late version fell into were not sold "
                                          f"again: {SOLD_AGAIN_SENSOR} is switched off")
            return
        self.ui.wait_for_tick(SOLD_AGAIN_SENSOR, after=engine_time())
        for run in reversed(self.ui.runs(tags={RUN_KIND_TAG: "sold_again"}, created_after=since)):
            outcome = self.finished(run["runId"])
            shop, first = shop_and_shift(self.world, outcome.tags[RANGE_START_TAG])
            _, last = shop_and_shift(self.world, outcome.tags[RANGE_END_TAG])
            sold_again = [s for s in self.shifts if first.start <= s.start <= last.start]
            self.days[shop.shop_id].shifts_sold_again += len(sold_again)
            if not outcome.success:
                self.days[shop.shop_id].runs_failed.append(f"{first.start:%Y-%m-%d %H:%M} (sold again): "
                                                           f"{outcome.failure()}")
            self.last_shift_end = max(self.last_shift_end, outcome.end_time or engine_time())

    def wait_until_watching(self, sensor: str, timeout: float = 120) -> str:
        """The sensor's cursor, once its first tick set one (a first tick only starts watching)."""
        return self.ui.wait_until_watching(sensor, timeout)

    def check_expected(self) -> None:
        """The day's expected answers and scenario ledger, as ``day_answers_sensor`` materializes them once
        the day's reports are in (waited for), or launched here when the sensor has done this day before
        (a day run again), the days before it are not done or it does not take the day within 30 s; then
        the check's verdict on the reports."""
        outcome = None
        if self.wait_until_watching(DAY_SENSOR) == (self.day - timedelta(days=1)).isoformat():
            # Its ticks come every 5 s; one that has not taken the day by then is off, or failing.
            deadline = time.monotonic() + 30
            while (self.ui.sensor_cursor(DAY_SENSOR) or "") < self.day.isoformat() and time.monotonic() < deadline:
                time.sleep(0.25)
            runs = self.ui.runs(tags={"dagster/partition": self.day.isoformat(), "dagster/sensor_name": DAY_SENSOR},
                                created_after=self.started)
            if runs:
                outcome = self.finished(runs[0]["runId"])
                if (outcome.start_time or 0) < self.last_shift_end:
                    outcome = None  # it ran before a shift was sold again: its check saw the earlier reports
        if outcome is None:
            outcome = self.finished(self.ui.launch_run(ASSET_JOB, {"dagster/partition": self.day.isoformat()},
                                                       assets=DAY_ASSETS))
        if not outcome.success:
            self.streaming.failed_runs.append(f"expected_answers {self.day}: {outcome.failure()}")
            return
        [evaluation] = outcome.check_evaluations()
        # A warning (a day run without the days before it) is said, and does not fail the day.
        warning = evaluation["severity"] == "WARN"
        self.streaming.expected = ("" if evaluation["success"] or warning else "FAILED: ") + (
            evaluation["description"] or "")
        self.streaming.expected_passed = evaluation["success"] or warning

    def read_back(self) -> list[ShopDay]:
        """The summary's figures. The summary counts what the topic holds: every stock message is read
        back once the broker had time to keep it, and what it lost is sent again."""
        resources = self.stack.resources
        working = [shop_id for shop_id, shop_day in self.days.items() if shop_day.runs_ok]
        checked = settle_and_verify(working, resources["shop_databases"], resources["kafka"], self.stack.provenance)
        for shop_id, lost in checked.lost_by_shop.items():
            self.days[shop_id].stock_parts_resent = lost
        read_shop_days(self.world, resources["shop_databases"], resources["clickhouse"], self.day, self.shifts,
                       self.days)
        self.streaming.promotion_prices = self.promotion_prices()
        if self.stack.store is not None and self.stack.store.syncs_refused:
            self.streaming.applied.append(f"the Sync API refused {self.stack.store.syncs_refused} sync request(s) "
                                          "(503); the shops' sync retried")
        return list(self.days.values())

    def write_ledger_summary(self, ledger_resource: ScenarioLedger) -> None:
        if self.scenario is None:
            return
        self.streaming.scenario = f"{self.scenario.name} (seed {self.scenario.seed})"
        self.streaming.ledger_counts = ledger_resource.counts(self.day)
        self.streaming.ledger_table = ledger_resource.describe()

    def begin_outages(self, index: int) -> None:
        """A scenario's Sync API outage and broker pause, from this shift's start (its run follows)."""
        scenario, store, broker = self.scenario, self.stack.store, self.stack.broker
        assert scenario is not None
        if scenario.outage_shift(self.day) == index and scenario.sync_api_outage:
            if store is None:
                self.streaming.not_applied.append("the Sync API outage: the Sync API is not the local stand-in")
            else:
                store.go_down(scenario.sync_api_outage.refused_requests)
        if scenario.pause_shift(self.day) == index and scenario.broker_pause:
            if broker is None:
                self.streaming.not_applied.append("the broker pause: the broker is not the local one")
            else:
                seconds = scenario.broker_pause.minutes * PAUSE_SECONDS_PER_SIMULATED_MINUTE
                broker.pause(seconds)
                self.streaming.applied.append(f"the broker paused for {seconds:g} s of wall time before the shift "
                                              f"of {self.shifts[index].start:%H:%M}")

    def check_broker(self) -> None:
        """Stop the day at once when the local broker died (instead of every run waiting it out)."""
        if self.stack.broker is not None:
            try:
                self.stack.broker.check_alive()
            except RuntimeError as exc:
                raise BrokerLost(str(exc)) from None

    def promotion_prices(self) -> list[str]:
        """For each promoted product, the unit prices its receipts charged in each shift of one shop of its city."""
        if self.stack.store is None:
            return []
        world, shop_databases = self.world, self.stack.shop_databases
        lines = []
        for product_id, city, _factor in PROMOTIONS:
            shop = next(s for s in world.shops if s.city == city)
            with shop_databases.transaction(shop.shop_id) as conn:
                prices = [[str(p) for p in ledger.unit_prices_charged(conn, shift, product_id)]
                          for shift in self.shifts]
            lines.append(f"  product {product_id} in {city} (shop {shop.shop_id}): receipts charged "
                         + " then ".join("/".join(p) or "nothing" for p in prices))
        shop_databases.dispose()
        return lines


@click.command(name="day", help="Simulate one day of every shop through Dagster.")
@click.option("--day", type=ISO_DATE, help="the day (default: the world's first day)")
@click.option("--scenario", help=f"a shipped scenario ({', '.join(shipped_scenarios())}) or a TOML file "
              f"(default: {SCENARIO}, else none)")
@click.option("--dry-run", is_flag=True, help="print a sample of each stream and table the day writes, simulated "
              "in memory, and start or write nothing")
def day_command(day: date | None, scenario: str | None, dry_run: bool) -> int:
    return run_day(day, scenario, dry_run)


def main(argv: list[str] | None = None) -> int:
    return commandline.run(day_command, argv, "rossmann day")


def run_day(day_option: date | None, scenario_option: str | None, dry_run_only: bool) -> int:
    """``make day``: the day run through Dagster and its summary printed; the exit code."""
    try:
        world = load_world()
        ledger_resource = ScenarioLedger(scenario=scenario_option) if scenario_option else scenario_ledger_from_env()
        scenario = ledger_resource.loaded()
        day = day_option or world.start_date
        if not world.start_date <= day <= world.end_date:
            raise ConfigError(f"--day {day} is outside the world's days, {world.start_date} to {world.end_date} "
                              f"(start_date and days in {WORLD_FILE})")
        if dry_run_only:
            print(dry_run(world, day, scenario))
            return 0
        started = time.perf_counter()
        with GracefulStop() as stop, local_stack(world, command="make day", scenario=ledger_resource) as stack:
            preflight(world, stack.resources)
            with dagster_on(stack, "make-day", **scenario_env(scenario_option)) as ui:
                chain = DayThroughDagster(stack, ui, day, scenario, stop)
                shop_days = chain.run_day()
                chain.write_ledger_summary(ledger_resource)
        summary = format_summary(day, shop_days, time.perf_counter() - started,
                                 redacted(stack.clickhouse.resolved_dsn()), chain.streaming)
        print(summary)
        print(f"Data: {data_dir()}  (Dagster UI on the same data, with this day's runs: make dev)")
    except BrokerLost as exc:
        print(f"stopped: {exc}; the shifts before it are complete, run the same command again", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except StopRequested as exc:
        print(f"{exc}; run the same command again to finish the day", file=sys.stderr)
        return 143
    failed = (any(d.runs_failed or not d.reports_match for d in shop_days) or chain.streaming.failed_runs
              or not chain.streaming.expected_passed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
