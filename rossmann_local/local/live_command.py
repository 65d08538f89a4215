"""``make live``: the chain on a clock, its terminals' receipts written as their simulated time arrives,
by Dagster's daemon.

``python -m rossmann_local.local.live_command [--speed 60] [--start now|YYYY-MM-DDTHH:MM] [--stop-at ...]
[--port 3000]`` starts the local stack as ``make day`` does and ``dagster dev`` (webserver, daemon)
on the instance under the data dir, then does what a user does in the UI: it launches
``live_clock_job`` (the clock mapped onto the wall clock at ``--speed``: 1 is real time, 60 makes a
6-hour shift take 6 minutes) and switches on ``live_clock_sensor``. From then on the daemon runs
live mode: the sensor opens each shift, requests ``live_sales_job`` runs writing the receipts due by
the clock, and closes the shift; the catalogue sensor applies changes made meanwhile, before any
receipt after them is written. This command only follows the runs through the GraphQL API and
prints what each did; the UI on ``--port`` shows the same runs.

Ctrl-C or SIGTERM switches live mode off as the UI would (the sensor off, its running step waited
for, ``live_clock_job`` with ``running: false``, which keeps where the clock got); the next
``make live`` resumes from there. A change made by hand in the stand-in Sync API (``python -m
rossmann_local.sync_api change ...``, no ``--at``) takes effect at the live clock's time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import click

from rossmann_local import commandline
from rossmann_local.defs.chain import CHAIN_DAY_STEP, CHAIN_LATE_STEP
from rossmann_local.defs.live import LIVE_CLOCK_JOB, LIVE_DONE, LIVE_SENSOR, LIVE_STEP_TAG, moment, session_start
from rossmann_local.defs.partitions import PARTITION_TAG, RANGE_START_TAG, shop_and_shift
from rossmann_local.domain.clock import DEFAULT_MAX_EVENTS_PER_SECOND, shift_at_or_after
from rossmann_local.domain.world import World
from rossmann_local.local.dagster_ui import UNFINISHED, DagsterUI, RunOutcome, dagster_on, engine_time
from rossmann_local.local.day import preflight
from rossmann_local.local.processes import GracefulStop, StopRequested
from rossmann_local.local.stack import LocalStack, local_stack, scenario_env
from rossmann_local.resources.live_clock import LiveClockFile, LiveClockState
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.settings import DEFAULT_SYNC_API_URL, ConfigError, load_world, shipped_scenarios
from rossmann_local.shop.shift import shop_progress
from rossmann_local.shop_db import ledger

FAILURES_BEFORE_GIVING_UP = 3  # the same step failing this many times in a row stops live mode
POLL_SECONDS = 0.5


def parse_moment(text: str, world: World, option: str) -> datetime:
    """``now`` (the wall clock's time, as a simulated time) or an ISO time; naive means the chain's zone."""
    if text == "now":
        return datetime.now(UTC)  # bookkeeping: the wall time the user asked the simulated clock to start at
    try:
        return moment(text, world, option)
    except ConfigError:
        raise ConfigError(f"{option} {text!r} is not 'now' or a time like 2026-06-01T09:00") from None


class LiveModeFailed(ConfigError):
    """A step kept failing: live mode stops, saying which and why."""


class LiveThroughDagster:
    """Live mode switched on, followed and switched off through a running Dagster's GraphQL API."""

    def __init__(self, stack: LocalStack, ui: DagsterUI, clock_file: LiveClockFile,
                 say: Callable[[str], None]) -> None:
        self.stack, self.ui, self.clock_file, self.say = stack, ui, clock_file, say
        self.world = stack.world
        self.since = engine_time()  # the runs after this are the session's (bookkeeping)
        self.reported: set[str] = set()
        self.failures: dict[str, int] = {}
        self.batches = self.receipts = 0

    def state(self) -> LiveClockState:
        state = self.clock_file.read()
        if state is None:
            raise ConfigError(f"live mode's clock file {self.clock_file.file()} is gone")
        return state

    def local(self, at: datetime) -> str:
        return at.astimezone(ZoneInfo(self.world.timezone)).strftime("%a %Y-%m-%d %H:%M:%S")

    def finished_run(self, run_id: str) -> RunOutcome:
        self.ui.wait_for_run(run_id, timeout=600)
        return self.ui.run(run_id)

    def switch_on(self, config: dict[str, Any]) -> LiveClockState:
        """``live_clock_job`` with the clock's settings, then the sensor's switch, as in the UI."""
        outcome = self.finished_run(self.ui.launch_run(
            LIVE_CLOCK_JOB, {}, run_config={"ops": {"set_live_clock": {"config": config}}}))
        if not outcome.success:
            raise ConfigError(f"live_clock_job failed: {outcome.failure()}")
        self.reported.add(outcome.run_id)
        state = self.state()
        if self.stack.store is not None:
            # A change made by hand is dated on the live clock (the file's mapping, wall -> simulated).
            self.stack.store.clock = lambda: self.clock_file.now(self.state())
        self.ui.start_sensor(LIVE_SENSOR)
        return state

    def follow(self, stop: GracefulStop) -> str:
        """Print each live run as it finishes, until live mode is done; returns why it ended."""
        while True:
            if stop.requested is not None:
                stop.check(f"at {self.local(self.clock_file.now(self.state()))} (simulated); make live resumes there")
            self.report_finished()
            state = self.state()
            if not state.running:
                return "switched off (live_clock_job with running: false)"
            if self.done(state):
                return "--stop-at reached" if state.stop_at is not None else "the world's last shift sold"
            pause = time.monotonic() + POLL_SECONDS
            while time.monotonic() < pause and stop.requested is None:
                time.sleep(0.05)

    def report_finished(self) -> None:
        runs = self.ui.runs(created_after=self.since, statuses=["SUCCESS", "FAILURE", "CANCELED"])
        for run in reversed(runs):  # oldest first
            tags = {t["key"]: t["value"] for t in run["tags"]}
            if run["runId"] in self.reported or LIVE_STEP_TAG not in tags:
                continue
            self.reported.add(run["runId"])
            # The sensor makes one live run at a time: every later one is created after this one started,
            # so the next query starts there instead of at the session's start.
            self.since = max(self.since, run["startTime"] or self.since)
            self.report(tags[LIVE_STEP_TAG], self.ui.run(run["runId"]))

    def report(self, step: str, run: RunOutcome) -> None:
        if not run.success:
            self.failures[step] = self.failures.get(step, 0) + 1
            self.say(f"{step} run {run.run_id} failed: {run.failure()}")
            if self.failures[step] >= FAILURES_BEFORE_GIVING_UP:
                raise LiveModeFailed(f"the {step} step failed {FAILURES_BEFORE_GIVING_UP} times in a row: "
                                     f"{run.failure()}")
            return
        self.failures.pop(step, None)
        if step in ("chain_day", "late_changes"):
            day = run.tags[PARTITION_TAG]
            figures = run.output(CHAIN_DAY_STEP if step == "chain_day" else CHAIN_LATE_STEP) or {}
            if step == "chain_day":
                faults = f", {figures['stream_faults']} faults on the stream" if figures.get("stream_faults") else ""
                self.say(f"{day}  the chain entered the day's {figures.get('changes', 0)} catalogue changes{faults}")
            else:
                self.say(f"{day}  the chain entered the day's {figures.get('late_changes', 0)} late catalogue "
                         "changes: sold_again_sensor sells again the shifts they fall into")
            return
        if step in ("open", "sales"):
            out = run.output("write_terminal_sales") or {}
            until = datetime.fromisoformat(out["up_to"])
            if step == "open":
                shift = shift_at_or_after(self.world, until)
                self.say(f"{self.local(until)}  shift {shift.start:%Y-%m-%d %H:%M}-{shift.end:%H:%M} open: "
                         "cache synced, deliveries taken")
            written = out.get("receipts_written", 0)
            if written or out.get("stock_parts_sent"):
                self.batches += 1
                self.receipts += written
                shops = ", ".join(f"{shop}: {count}" for shop, count in (out.get("in_shift_by_shop") or {}).items())
                self.say(f"{self.local(until)}  +{written} receipt{'' if written == 1 else 's'} "
                         f"(in the shift so far, by shop: {shops})"
                         + (f", {out['stock_parts_sent']} stock messages sent" if out.get("stock_parts_sent") else ""))
            return
        shift = shop_and_shift(self.world, run.tags[RANGE_START_TAG])[1]
        totals = []
        for shop in self.world.shops:
            with self.stack.shop_databases.transaction(shop.shop_id) as conn:
                totals.append(ledger.shift_totals(conn, shift))
        receipts = sum(int(t["receipts"]) for t in totals)
        revenue = sum(t["revenue"] for t in totals)
        self.say(f"{self.local(shift.end)}  shift {shift.start:%Y-%m-%d %H:%M}-{shift.end:%H:%M} closed: "
                 f"{receipts} receipts, {revenue:,.2f} EUR; stock messages sent, reports in ClickHouse")

    def done(self, state: LiveClockState) -> bool:
        """Every shift ending by ``stop_at`` closed (and nothing more due before it), or the world's last shift sold."""
        pending = [shop_progress(self.world, s, state.first_shift, self.stack.shop_databases).shift
                   for s in self.world.shops]
        stop_at = state.stop_at
        sold = all(p is None for p in pending) or (
            stop_at is not None and self.clock_file.now(state) >= stop_at and
            all(p is None or p.end > stop_at for p in pending))
        return sold and not self.unfinished() and self.sensor_says_done()

    def sensor_says_done(self) -> bool:
        """The live sensor's newest tick, after the session's last run, found nothing left to do: the
        day's late catalogue changes entered and the shifts they fell into sold again, too."""
        ticks = [t for t in self.ui.sensor(LIVE_SENSOR, ticks=1)["ticks"] if t["timestamp"] > self.since]
        return bool(ticks) and (ticks[0]["skipReason"] or "").startswith(LIVE_DONE)

    def unfinished(self) -> list[dict[str, Any]]:
        return [r for r in self.ui.runs(created_after=self.since, statuses=UNFINISHED)
                if any(t["key"] == LIVE_STEP_TAG for t in r["tags"])]

    def switch_off(self, timeout: float = 120) -> LiveClockState:
        """The sensor's switch off, its running step waited for, then ``live_clock_job`` with
        ``running: false`` (the clock file keeps how far it got, where the next session resumes)."""
        self.ui.stop_sensor(LIVE_SENSOR)
        deadline = time.monotonic() + timeout
        while self.unfinished() and time.monotonic() < deadline:
            time.sleep(0.25)
        self.report_finished()
        outcome = self.finished_run(self.ui.launch_run(
            LIVE_CLOCK_JOB, {}, run_config={"ops": {"set_live_clock": {"config": {"running": False}}}}))
        if not outcome.success:
            raise ConfigError(f"live_clock_job (running: false) failed: {outcome.failure()}")
        return self.state()


@dataclass(frozen=True)
class LiveOptions:
    """``make live``'s command line."""

    speed: float | None = None
    start: str | None = None
    stop_at: str | None = None
    max_events_per_second: float = DEFAULT_MAX_EVENTS_PER_SECOND
    scenario: str | None = None
    port: int = 3000
    sync_api_port: int | None = urlsplit(DEFAULT_SYNC_API_URL).port


@click.command(name="live", help="Run the chain on a clock: receipts appear as their time arrives.")
@click.option("--speed", type=float, help="simulated seconds per wall second (default 60, or the stopped session's)")
@click.option("--start", help="'now' or a simulated time, e.g. 2026-06-01T09:00 (default: resume, or the world's "
              "first opening)")
@click.option("--stop-at", help="stop once the shifts ending by this simulated time are closed")
@click.option("--max-events-per-second", type=float, default=DEFAULT_MAX_EVENTS_PER_SECOND, show_default=True,
              help="receipts and stock messages per wall second at most; a higher --speed is lowered to stay within it")
@click.option("--scenario", help=f"a shipped scenario ({', '.join(shipped_scenarios())}) or a TOML file: its "
              "changes and stream faults entered each day, its late changes after the day's shifts (its outage and "
              "broker pause are make day's)")
@click.option("--port", type=int, default=3000, show_default=True, help="the Dagster UI's port")
@click.option("--sync-api-port", type=int, default=urlsplit(DEFAULT_SYNC_API_URL).port, show_default=True,
              help="the stand-in Sync API's port, where `python -m rossmann_local.sync_api change` finds it "
              "(unused when ROSSMANN_SYNC_API_URL names a Sync API)")
def live_command(**options: Any) -> int:
    return run_live(LiveOptions(**options))


def main(argv: list[str] | None = None) -> int:
    return commandline.run(live_command, argv, "rossmann live")


def run_live(args: LiveOptions) -> int:
    """``make live``: live mode switched on, followed and switched off; the exit code."""

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        world = load_world()
        if args.speed is not None and not args.speed > 0:
            raise ConfigError(f"--speed must be above 0, got {args.speed:g}")
        start = parse_moment(args.start, world, "--start") if args.start else None
        stop_at = parse_moment(args.stop_at, world, "--stop-at") if args.stop_at else None
        config = {k: v for k, v in {"speed": args.speed, "start": start.isoformat() if start else None,
                                    "stop_at": stop_at.isoformat() if stop_at else None,
                                    "max_events_per_second": args.max_events_per_second}.items() if v is not None}
        ledger_resource = ScenarioLedger(scenario=args.scenario) if args.scenario else None
        if ledger_resource is not None:
            ledger_resource.loaded()  # a bad scenario stops here
        with GracefulStop() as stop, local_stack(world, sync_api_port=args.sync_api_port, command="make live",
                                                  scenario=ledger_resource) as stack:
            preflight(world, stack.resources)
            # The chain's day of changes goes in through the stand-in's admin endpoints; a Sync API the
            # environment names has its own admin side (as make day leaves its catalogue alone).
            config["chain_changes"] = stack.store is not None
            clock_file = LiveClockFile()
            # A bad --start stops here, before the engine starts.
            session_start(world, clock_file, stack.shop_databases, start, args.speed, stop_at,
                          args.max_events_per_second)
            with dagster_on(stack, "make-live", port=args.port, **scenario_env(args.scenario)) as ui:
                live = LiveThroughDagster(stack, ui, clock_file, say)
                state = live.switch_on(config)
                if args.speed is not None and state.speed < args.speed:
                    say(f"--speed {args.speed:g} lowered to {state.speed:g}: at most {args.max_events_per_second:g} "
                        f"receipts and stock messages per second (--max-events-per-second)")
                say(f"live mode at x{state.speed:g} from {live.local(state.sim_at)} (simulated; {state.speed:g} s of "
                    f"it per wall second), run by Dagster's daemon: UI on {ui.url} (Runs, tag "
                    f"{LIVE_STEP_TAG}). Ctrl-C stops; make live resumes.")
                if stack.store is not None:
                    say(f"Sync API stand-in on {stack.sync_api.base_url}: a change made now takes effect at the "
                        "live clock's time, e.g. python -m rossmann_local.sync_api change price --product 1 "
                        "--city Berlin --price 1.99")
                try:
                    why = live.follow(stop)
                except StopRequested as exc:
                    say(f"{exc}: switching live mode off")
                    state = live.switch_off()
                    say(f"stopped at {live.local(state.sim_reached)} (simulated). {live.receipts} receipts written "
                        f"live in {live.batches} batches.")
                    return 0
                state = live.switch_off()
                say(f"stopped at {live.local(state.sim_reached)} (simulated): {why}. {live.receipts} receipts "
                    f"written live in {live.batches} batches.")
    except ConfigError as exc:
        print(f"live mode stopped: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
