"""Live mode in Dagster: a sensor on the live clock, and the job that writes terminal sales as their
simulated time arrives.

Each tick of ``live_clock_sensor`` reads the shops' progress from their databases and requests the
one next step: the end-of-shift run of a shift that has ended (``shop_shift_job``: sync, deliveries,
sales, stock messages, reports; its receipts are the ones written live, verified, not rewritten), or a
``live_sales_job`` run that opens the shift where it has just begun (sync and deliveries) and writes
each open shop's receipts up to the clock's simulated now. ``live_clock_job`` sets the clock (switched
on from the UI: launch it, then switch on the sensor; the daemon does the rest; ``make live`` does
the same through the GraphQL API). The sensor waits while a run it requested, or a catalogue upsert
run, is unfinished, and while the shops have not applied every catalogue change on Kafka: a change
takes effect on receipts at its own time, never after receipts were written past it. Nothing is
sold past ``stop_at``.

The chain's side runs on the same clock, as in ``make day``: before a day's shifts open, the sensor
requests that day's ``chain_catalogue_day_job`` (the afternoon promotion; with ``ROSSMANN_SCENARIO``
its burst and its faults on the stream); once the day's shifts are closed, its
``chain_late_changes_job`` (a scenario's late changes), and the next day opens only after
``sold_again_sensor`` has sold again the shifts they fell into.
"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from rossmann_local.defs.chain import chain_day_done, chain_runs, late_changes_of
from rossmann_local.defs.partitions import UNFINISHED, partition_key, range_tags
from rossmann_local.defs.streaming import RUN_KIND_TAG, SENSOR_INTERVAL_S, shifts_awaiting_sale_again
from rossmann_local.domain.clock import DEFAULT_MAX_EVENTS_PER_SECOND, capped_speed, shift_at_or_after
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.stock_levels import checkpoints
from rossmann_local.domain.world import World
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.live_clock import LiveClockFile, LiveClockState
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError
from rossmann_local.shop.catalogue import catalogue_lag
from rossmann_local.shop.shift import (
    ShiftNotOpen,
    ShiftOutOfOrder,
    next_live_sale,
    shop_progress,
    take_deliveries,
    write_live_sales,
)
from rossmann_local.shop.stock import deliver_queued, queue_stock_levels
from rossmann_local.shop.sync import sync_cache

LIVE_SALES_JOB = "live_sales_job"
LIVE_CLOCK_JOB = "live_clock_job"
LIVE_SENSOR = "live_clock_sensor"
LIVE_STEP_TAG = "rossmann_local/live_step"  # chain_day, open, sales, close or late_changes
LIVE_UNTIL_TAG = "rossmann_local/live_until"
# A change made by hand is dated on the live clock, then published by the Sync API's outbox within a
# moment: the sensor sells up to a wall second behind the clock, so a change is on Kafka before then.
PUBLISH_LAG = timedelta(seconds=1)
# How a tick says live mode has nothing left to do (make live then switches it off).
LIVE_DONE = "live mode is done:"
CHAIN_ATTEMPTS = 3  # failed runs of a chain job for a day before the sensor stops asking
# The runs a live step waits for: its own, the chain's, and those applying or re-selling catalogue changes.
WAITED_FOR_KINDS = ("catalogue_upsert", "chain_day", "chain_late", "sold_again")


class LiveClockConfig(dg.Config):
    """Live mode's clock, as the launchpad (or ``make live``) sets it: switched on at ``speed`` from
    ``start``, or off (``running: false``; the live sensor then requests nothing)."""

    running: bool = True
    speed: float | None = None  # simulated seconds per wall second (default 60, or the stopped session's)
    # Receipts and stock messages per wall second at most: a higher speed is lowered to stay within it.
    max_events_per_second: float = DEFAULT_MAX_EVENTS_PER_SECOND
    start: str | None = None  # a simulated time, e.g. 2026-06-01T09:00 (default: resume)
    stop_at: str | None = None  # stop once the shifts ending by this simulated time are closed
    # Enter the chain's day of catalogue changes (and a scenario's) through the Sync API's admin endpoints;
    # false when the Sync API's own admin side changes its catalogue.
    chain_changes: bool = True


def world_start(world: World) -> datetime:
    return datetime.combine(world.start_date, world.shift_layout.opens, tzinfo=ZoneInfo(world.timezone))


def moment(text: str, world: World, option: str) -> datetime:
    """An ISO time; naive means the chain's zone."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a time like 2026-06-01T09:00") from None
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(world.timezone))


def session_start(world: World, clock_file: LiveClockFile, shop_databases: ShopDatabases, start: datetime | None,
                  speed: float | None, stop_at: datetime | None,
                  max_events_per_second: float = DEFAULT_MAX_EVENTS_PER_SECOND,
                  chain_changes: bool = True) -> LiveClockState:
    """The clock of a live session: from ``start``, or where the previous session stopped, or (neither)
    just after the last shift the shop databases hold, else the world's first opening; at ``speed``,
    lowered so the world's receipts and stock messages stay within ``max_events_per_second``."""
    if not max_events_per_second > 0:
        raise ConfigError(f"--max-events-per-second must be above 0, got {max_events_per_second:g}")
    state = _session_start(world, clock_file, shop_databases, start, speed, stop_at)
    return state.model_copy(update={"speed": capped_speed(world, state.speed, max_events_per_second),
                                    "chain_changes": chain_changes})


def _session_start(world: World, clock_file: LiveClockFile, shop_databases: ShopDatabases, start: datetime | None,
                   speed: float | None, stop_at: datetime | None) -> LiveClockState:
    if speed is not None and not speed > 0:
        raise ConfigError(f"--speed must be above 0, got {speed:g}")
    previous = clock_file.read()
    sold = [shop_progress(world, shop, world_start(world), shop_databases).shift for shop in world.shops]
    resume_at = min((s.start for s in sold if s is not None), default=None)
    wall = datetime.now(UTC)  # bookkeeping: the wall moment the simulated clock is anchored to
    if start is None and previous is not None:
        return previous.model_copy(update={"sim_at": previous.sim_reached, "wall_at": wall, "running": True,
                                           "speed": speed or previous.speed, "stop_at": stop_at})
    if start is None:
        start = resume_at or world_start(world)
    first = shift_at_or_after(world, start)
    if first is None or start.astimezone(ZoneInfo(world.timezone)).date() < world.start_date:
        raise ConfigError(f"--start {start:%Y-%m-%d %H:%M %Z} is outside the world's days, {world.start_date} to "
                          f"{world.end_date}")
    if resume_at is not None and first.start < resume_at:
        raise ConfigError(f"--start {start:%Y-%m-%d %H:%M}: the shop databases already hold the shifts before "
                          f"{resume_at:%Y-%m-%d %H:%M}; start at or after it (or leave --start out to resume), "
                          f"or use a fresh data dir")
    return LiveClockState(speed=speed or 60.0, sim_at=start, wall_at=wall, first_shift=first.start, sim_reached=start,
                          running=True, stop_at=stop_at)


class LiveSalesConfig(dg.Config):
    until_utc: str  # simulated time: every receipt before it is written
    shop_ids: list[int]


def shift_runs_tags(shift: ShiftWindow, shop_ids: list[int], step: str) -> dict[str, str]:
    """One run over the shift's partitions of these shops (a range from the first to the last)."""
    return {**range_tags(str(partition_key(shift, min(shop_ids))), str(partition_key(shift, max(shop_ids)))),
            LIVE_STEP_TAG: step}


def build_live_defs(world: World, shop_shift_job: "dg.UnresolvedAssetJobDefinition", chain_day_job: dg.JobDefinition,
                    chain_late_job: dg.JobDefinition) -> tuple[dg.JobDefinition, dg.JobDefinition, dg.SensorDefinition]:
    @dg.op
    def write_terminal_sales(context: dg.OpExecutionContext, config: LiveSalesConfig, shop_databases: ShopDatabases,
                             sync_api: SyncApiClient, kafka: KafkaResource,
                             scenario_ledger: ScenarioLedger) -> dg.Output[dict]:
        """The open shift's receipts of each shop up to the simulated time, as the terminals ring
        them up, and the stock messages whose checkpoint has passed. A shop whose shift has just
        opened first syncs its cache and takes the shift's delivery (the shift's end takes both again,
        with the same rows)."""
        until = datetime.fromisoformat(config.until_utc)
        figures, rows = {"receipts_written": 0, "receipts_in_shift": 0, "shops_opened": 0}, []
        for shop_id in config.shop_ids:
            shop = world.shop(shop_id)
            try:
                progress = shop_progress(world, shop, until, shop_databases)
                if progress.shift is None or not progress.shift.contains(until):
                    continue
                if not progress.delivered:
                    sync_cache(shop, shop_databases, sync_api, progress.shift.start)
                    take_deliveries(world, shop, progress.shift, shop_databases)
                    figures["shops_opened"] += 1
                written = write_live_sales(world, shop, progress.shift, until, shop_databases)
                queue_stock_levels(world, shop, progress.shift, shop_databases, until)
            except (ShiftNotOpen, ShiftOutOfOrder, ConfigError) as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            figures["receipts_written"] += written.stored.written
            figures["receipts_in_shift"] += written.receipts_so_far
            rows.append(dg.TableRecord({
                "shop_id": shop_id, "written": written.stored.written, "in_shift": written.receipts_so_far,
                "replaced": written.stored.replaced,
                "first": written.written_from.astimezone(until.tzinfo).strftime("%H:%M:%S")
                if written.written_from else "",
                "last": written.written_to.astimezone(until.tzinfo).strftime("%H:%M:%S")
                if written.written_to else ""}))
        _, outcome, _ = deliver_queued(config.shop_ids, shop_databases, kafka, scenario_ledger.provenance(world))
        figures["stock_parts_sent"] = len(outcome.confirmed)
        context.log.info(f"up to {until:%Y-%m-%d %H:%M:%S}: {figures['receipts_written']} receipts written, "
                         f"{figures['receipts_in_shift']} in the open shifts")
        columns = [dg.TableColumn(n, t) for n, t in (("shop_id", "int"), ("written", "int"), ("in_shift", "int"),
                                                     ("replaced", "int"), ("first", "string"),
                                                     ("last", "string"))]
        return dg.Output({**figures, "until": until.isoformat(), "per_shop": [r.data for r in rows]}, metadata={
            **figures, "up_to": dg.MetadataValue.text(until.isoformat()),
            "in_shift_by_shop": dg.MetadataValue.json({str(r.data["shop_id"]): r.data["in_shift"] for r in rows}),
            "per_shop": dg.MetadataValue.table(rows, schema=dg.TableSchema(columns=columns))})

    @dg.op
    def set_live_clock(context: dg.OpExecutionContext, config: LiveClockConfig, live_clock: LiveClockFile,
                       shop_databases: ShopDatabases) -> dg.Output[dict]:
        """Switch live mode on (the clock anchored at the wall clock's now) or off, in the clock file
        the live sensor reads."""
        try:
            if config.running:
                state = session_start(world, live_clock, shop_databases,
                                      moment(config.start, world, "start") if config.start else None, config.speed,
                                      moment(config.stop_at, world, "stop_at") if config.stop_at else None,
                                      config.max_events_per_second, config.chain_changes)
            else:
                state = live_clock.read()
                if state is None:
                    return dg.Output({"running": False}, metadata={"running": False})
                if state.running:  # where a later session resumes: the clock's reading now, up to stop_at
                    reached = live_clock.now(state)
                    if state.stop_at is not None:
                        reached = min(reached, state.stop_at)
                    state = state.model_copy(update={"running": False, "sim_reached": max(reached, state.sim_reached)})
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        live_clock.write(state)
        figures = {"running": state.running, "speed": state.speed, "from": state.sim_at.isoformat(),
                   "stop_at": state.stop_at.isoformat() if state.stop_at else ""}
        context.log.info(f"live mode {'on' if state.running else 'off'}: x{state.speed:g} from {state.sim_at}")
        return dg.Output(figures, metadata={k: dg.MetadataValue.text(str(v)) for k, v in figures.items()})

    @dg.job(name=LIVE_CLOCK_JOB, tags={RUN_KIND_TAG: "live_clock"},
            description="Live mode switched on from the UI: sets the clock (speed, start, stop_at; empty resumes), "
                        "then switch on live_clock_sensor. running: false switches it off.")
    def live_clock_job() -> None:
        set_live_clock()

    @dg.job(name=LIVE_SALES_JOB, tags={RUN_KIND_TAG: "live_sales"},
            description="Live mode: the terminals' receipts of the open shift up to a simulated time, written "
                        "into the shop databases as that time arrives.")
    def live_sales_job() -> None:
        write_terminal_sales()

    def chain_step(instance: dg.DagsterInstance, job_name: str, day: date,
                   step: str) -> dg.RunRequest | dg.SkipReason | None:
        """A run of the chain's job for the day, unless one succeeded (one under way is waited for);
        after ``CHAIN_ATTEMPTS`` failed runs, a skip that names the last (the sensor asks no more)."""
        runs = chain_runs(instance, job_name, day)
        if chain_day_done(runs):
            return None
        failed = [run for run in runs if run.status == dg.DagsterRunStatus.FAILURE]
        if len(failed) >= CHAIN_ATTEMPTS:
            return dg.SkipReason(f"{job_name} of {day} failed {len(failed)} times (last: run {failed[0].run_id}); "
                                 "launch it for that day once fixed, or switch live mode on with "
                                 "chain_changes: false when the Sync API's own admin side changes the catalogue")
        return dg.RunRequest(job_name=job_name, partition_key=day.isoformat(), tags={LIVE_STEP_TAG: step})

    @dg.sensor(jobs=[live_sales_job, shop_shift_job, chain_day_job, chain_late_job],
               minimum_interval_seconds=SENSOR_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Live mode's clock (make live): opens and closes the shifts as simulated time "
                           "passes, and requests the live sales in between.")
    def live_clock_sensor(context: dg.SensorEvaluationContext, live_clock: LiveClockFile,
                          shop_databases: ShopDatabases, kafka: KafkaResource,
                          scenario_ledger: ScenarioLedger) -> dg.SensorResult | dg.SkipReason:
        state = live_clock.read()
        if state is None or not state.running:
            return dg.SkipReason("live mode is not running (make live, or live_clock_job)")
        waiting = [r for r in context.instance.get_runs(dg.RunsFilter(statuses=UNFINISHED), limit=50)
                   if LIVE_STEP_TAG in r.tags or r.tags.get(RUN_KIND_TAG) in WAITED_FOR_KINDS]
        if waiting:
            return dg.SkipReason(f"waiting for run {waiting[0].run_id} ({waiting[0].job_name})")
        now = live_clock.now(state, behind=PUBLISH_LAG)
        if state.stop_at is not None and now > state.stop_at:
            now = state.stop_at  # nothing is sold past stop_at: the shifts ending by then close, and live mode ends
        progress = {s.shop_id: shop_progress(world, s, state.first_shift, shop_databases) for s in world.shops}
        pending = [p.shift for p in progress.values() if p.shift is not None]
        shift = min(pending, key=lambda s: s.start) if pending else None
        zone = ZoneInfo(world.timezone)
        # The day whose shifts have all closed just now: its late changes come in before the next day opens.
        closed_day = world.end_date if shift is None else \
            shift.start.astimezone(zone).date() - timedelta(days=1) \
            if shift.start == shifts_of_day(world, shift.start.astimezone(zone).date())[0].start else None
        if state.chain_changes and closed_day is not None and closed_day >= state.first_shift.astimezone(zone).date() \
                and late_changes_of(scenario_ledger.loaded(), world, closed_day):
            late = chain_step(context.instance, chain_late_job.name, closed_day, "late_changes")
            if late is not None:
                return late if isinstance(late, dg.SkipReason) else dg.SensorResult(run_requests=[late])
        # Nothing more until every catalogue change published so far is in the shops: the catalogue sensor's
        # upsert run comes first, so a change takes effect at its time on receipts and none is rewritten.
        lag = catalogue_lag(world, world.shop_ids, shop_databases, kafka)
        if lag:
            return dg.SkipReason(f"waiting for the catalogue sensor's upsert of {lag} catalogue message(s) "
                                 "the shops have not applied yet")
        if awaiting := shifts_awaiting_sale_again(context.instance, since=state.wall_at.timestamp()):
            return dg.SkipReason(f"waiting for sold_again_sensor to sell again {', '.join(awaiting)}: a late "
                                 "catalogue version fell into them")
        if shift is None:
            return dg.SkipReason(f"{LIVE_DONE} every shift of the world is sold")
        shops = [shop_id for shop_id, p in progress.items() if p.shift == shift]
        if state.stop_at is not None and shift.start >= state.stop_at:
            return dg.SkipReason(f"{LIVE_DONE} stopped at {state.stop_at:%Y-%m-%d %H:%M} (stop_at): the shifts "
                                 "ending by then are closed")
        # The chain's changes of the day are entered before its shifts open (dated at their own times).
        if state.chain_changes and (chain_day := chain_step(
                context.instance, chain_day_job.name, shift.start.astimezone(zone).date(), "chain_day")) is not None:
            return chain_day if isinstance(chain_day, dg.SkipReason) else dg.SensorResult(run_requests=[chain_day])
        if now < shift.start:
            return dg.SkipReason(f"the shops open at {shift.start:%Y-%m-%d %H:%M}; it is {now:%H:%M}")
        if shift.end <= now:
            return dg.SensorResult(run_requests=[dg.RunRequest(
                job_name=shop_shift_job.name, tags=shift_runs_tags(shift, shops, "close"))])
        closed = [s for s in shops if not progress[s].delivered]
        if closed:
            config = LiveSalesConfig(until_utc=max(now, shift.start).isoformat(), shop_ids=closed)
            return dg.SensorResult(run_requests=[dg.RunRequest(
                job_name=LIVE_SALES_JOB, run_config=dg.RunConfig(ops={"write_terminal_sales": config}),
                tags={LIVE_STEP_TAG: "open", LIVE_UNTIL_TAG: config.until_utc})])
        # A run when something is due: a receipt the shops do not hold yet, or a stock checkpoint
        # passed since the last run (not one run per tick: at speed 1 a receipt every few seconds).
        since = max(datetime.fromisoformat(context.cursor), shift.start) if context.cursor else shift.start
        next_sale = min(filter(None, (next_live_sale(world, world.shop(s), shift, shop_databases) for s in shops)),
                        default=None)
        checkpoint = any(since < c <= now for c in checkpoints(shift, world.sales.stock_report_interval_minutes))
        if not checkpoint and (next_sale is None or next_sale >= now):
            nothing = "every receipt of the shift is written" if next_sale is None else \
                f"the next receipt is due at {next_sale.astimezone(shift.start.tzinfo):%H:%M:%S}"
            return dg.SkipReason(f"{nothing}; it is {now.astimezone(shift.start.tzinfo):%H:%M:%S}")
        config = LiveSalesConfig(until_utc=now.isoformat(), shop_ids=shops)
        return dg.SensorResult(cursor=now.isoformat(), run_requests=[dg.RunRequest(
            job_name=LIVE_SALES_JOB, run_config=dg.RunConfig(ops={"write_terminal_sales": config}),
            tags={LIVE_STEP_TAG: "sales", LIVE_UNTIL_TAG: now.isoformat()})])

    return live_sales_job, live_clock_job, live_clock_sensor
