"""``make live``: the chain on a clock, its terminals' receipts written as their simulated time arrives.

``python -m rossmann_local.local.live [--speed 60] [--start now|YYYY-MM-DDTHH:MM] [--stop-at ...]
[--ui]`` starts the local stack as ``make day`` does and maps the world's simulated clock onto the
wall clock at ``--speed`` (1 is real time, 60 makes a 6-hour shift take 6 minutes). Then, about
every ``--tick`` wall seconds, it does what the daemon would do, in this process:

1. it pins simulated "now" and waits until the stand-in Sync API's outbox has published every
   catalogue change made up to then (a change made without ``--at`` takes effect at the live
   clock's time);
2. it ticks the catalogue sensor and runs the upserts it requests, so each shop has those changes;
3. it ticks ``live_clock_sensor`` with the pinned time and runs what it requests: the start of a
   shift (sync, deliveries), a ``live_sales_job`` run writing every receipt before "now" that the
   shop databases do not hold yet (and the stock messages whose checkpoint has passed), or the end
   of a shift (``shop_shift_job``: its receipts verified and completed, stock messages, reports).

Ctrl-C or SIGTERM stops it between steps; the next ``make live`` resumes from what the shop
databases hold, the clock continuing from where it stopped. ``--ui`` also serves the Dagster UI on
the same instance, where the live runs appear as they happen.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import dagster as dg

from rossmann_local.defs import SHOP_SHIFT_JOB, build_definitions
from rossmann_local.defs.live import LIVE_SALES_JOB, LIVE_SENSOR, LIVE_STEP_TAG, moment, session_start
from rossmann_local.defs.partitions import RANGE_START_TAG, shop_and_shift
from rossmann_local.domain.clock import LiveClock, shift_at_or_after
from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.world import World
from rossmann_local.local.day import preflight
from rossmann_local.local.in_process import QUIET_RUN_CONFIG, CatalogueSensorDriver, MemoryCursor, first_failure
from rossmann_local.local.instance import WORKSPACE, instance_home, managed_instance
from rossmann_local.local.processes import GracefulStop, StopRequested, die_with_parent
from rossmann_local.local.stack import LocalStack, local_stack
from rossmann_local.resources.live_clock import LiveClockFile, LiveClockState
from rossmann_local.settings import (
    DEFAULT_SYNC_API_URL,
    ConfigError,
    load_world,
)
from rossmann_local.shop.shift import shop_progress
from rossmann_local.shop_db import ledger

FAILURES_BEFORE_GIVING_UP = 3  # the same step failing this many times in a row stops live mode


def parse_moment(text: str, world: World, option: str) -> datetime:
    """``now`` (the wall clock's time, as a simulated time) or an ISO time; naive means the chain's zone."""
    if text == "now":
        return datetime.now(UTC)  # bookkeeping: the wall time the user asked the simulated clock to start at
    try:
        return moment(text, world, option)
    except ConfigError:
        raise ConfigError(f"{option} {text!r} is not 'now' or a time like 2026-06-01T09:00") from None


class LiveMode:
    """The daemon's part in this process: the two sensors ticked in order, their runs executed."""

    def __init__(self, stack: LocalStack, instance: dg.DagsterInstance, clock_file: LiveClockFile,
                 state: LiveClockState, say: Callable[[str], None]) -> None:
        self.stack, self.instance, self.clock_file, self.state, self.say = stack, instance, clock_file, state, say
        self.world = stack.world
        self.definitions = build_definitions(stack.world, {**stack.resources, "live_clock": clock_file})
        # The cursors live in this session: the catalogue is read from the topics' start at each session
        # (applying a message again changes nothing), the live sensor's from the open shift's start.
        self.catalogue = CatalogueSensorDriver(self.definitions, instance, MemoryCursor(), QUIET_RUN_CONFIG)
        self.sensor = self.definitions.resolve_sensor_def(LIVE_SENSOR)
        self.cursor = MemoryCursor()
        self.jobs = {name: self.definitions.resolve_job_def(name) for name in (SHOP_SHIFT_JOB, LIVE_SALES_JOB)}
        self.failures: dict[str, int] = {}
        self.batches = self.receipts = 0
        if stack.store is not None:
            # Bookkeeping of the live mapping (wall -> simulated): a hand-made change is dated in simulated time.
            stack.store.clock = lambda: self.clock.sim(datetime.now(UTC))

    @property
    def clock(self) -> LiveClock:
        return self.state.clock

    def local(self, moment: datetime) -> str:
        return moment.astimezone(ZoneInfo(self.world.timezone)).strftime("%a %Y-%m-%d %H:%M:%S")

    def settle_catalogue(self) -> None:
        """Every change made so far is on Kafka (the stand-in's outbox) and applied to the shops."""
        store = self.stack.store
        if store is not None:
            deadline = time.monotonic() + 30
            while store.unpublished() and time.monotonic() < deadline:
                time.sleep(0.05)
        for request, run in self.catalogue.tick_and_run():
            if run.success:
                applied = run.output_for_node("apply_catalogue_changes")
                self.say(f"catalogue changes applied ({request.run_key}): {applied}")
            else:
                self.say(f"catalogue upsert {request.run_key} failed: {first_failure(run)}")

    def step(self, now: datetime) -> str | None:
        """One tick of the live sensor at simulated ``now`` and its run; returns the step it ran."""
        # Constructed, not copied: Dagster rebuilds a resource from the values it was constructed with.
        clock_file = LiveClockFile(path=self.clock_file.path, pinned_sim_utc=now.isoformat())
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor.read(),
                                     resources={"live_clock": clock_file,
                                                "shop_databases": self.stack.shop_databases}) as context:
            result = self.sensor(context)
        if isinstance(result, dg.SkipReason) or not result.run_requests:
            return None
        if result.cursor is not None:
            self.cursor.write(result.cursor)
        [request] = result.run_requests
        step = request.tags[LIVE_STEP_TAG]
        job = self.jobs[request.job_name]
        run = job.execute_in_process(
            instance=self.instance, tags=request.tags, raise_on_error=False,
            run_config={**(request.run_config or {}), **QUIET_RUN_CONFIG},
            asset_selection=list(request.asset_selection) if request.asset_selection else None)
        if not run.success:
            key = f"{step} {request.tags}"
            self.failures[key] = self.failures.get(key, 0) + 1
            self.say(f"{self.local(now)}  {step} run failed: {first_failure(run)}")
            if self.failures[key] >= FAILURES_BEFORE_GIVING_UP:
                raise LiveModeFailed(f"the {step} step failed {FAILURES_BEFORE_GIVING_UP} times in a row: "
                                     f"{first_failure(run)}")
            return step
        self.failures.clear()
        self.report(step, now, run)
        return step

    def report(self, step: str, now: datetime, run: dg.ExecuteInProcessResult) -> None:
        if step in ("open", "sales"):
            out = run.output_for_node("write_terminal_sales")
            if step == "open":
                shift = shift_at_or_after(self.world, datetime.fromisoformat(out["until"]))
                self.say(f"{self.local(now)}  shift {shift.start:%Y-%m-%d %H:%M}-{shift.end:%H:%M} open: "
                         "cache synced, deliveries taken")
            if out["receipts_written"] or out["stock_parts_sent"]:
                self.batches += 1
                self.receipts += out["receipts_written"]
                shops = ", ".join(f"{r['shop_id']}: {r['in_shift']}" for r in out["per_shop"])
                written = out["receipts_written"]
                self.say(f"{self.local(now)}  +{written} receipt{'' if written == 1 else 's'} "
                         f"(in the shift so far, by shop: {shops})"
                         + (f", {out['stock_parts_sent']} stock messages sent" if out["stock_parts_sent"] else ""))
            return
        shift = self.shift_of(run)
        totals = [self.shift_totals(shop.shop_id, shift) for shop in self.world.shops]
        receipts = sum(int(t["receipts"]) for t in totals)
        revenue = sum(t["revenue"] for t in totals)
        self.say(f"{self.local(now)}  shift {shift.start:%Y-%m-%d %H:%M}-{shift.end:%H:%M} closed: "
                 f"{receipts} receipts, {revenue:,.2f} EUR; stock messages sent, reports in ClickHouse")

    def shift_of(self, run: dg.ExecuteInProcessResult) -> ShiftWindow:
        return shop_and_shift(self.world, run.dagster_run.tags[RANGE_START_TAG])[1]

    def shift_totals(self, shop_id: int, shift: ShiftWindow) -> dict[str, Any]:
        with self.stack.shop_databases.transaction(shop_id) as conn:
            return ledger.shift_totals(conn, shift)

    def save(self, reached: datetime, running: bool) -> None:
        self.state = self.state.model_copy(update={"sim_reached": reached, "running": running})
        self.clock_file.write(self.state)

    def finished(self) -> bool:
        """Past ``stop_at`` with every shift ending by then closed, or the world's last shift sold."""
        pending = [shop_progress(self.world, s, self.state.first_shift, self.stack.shop_databases).shift
                   for s in self.world.shops]
        if all(p is None for p in pending):
            return True
        stop_at = self.state.stop_at
        return stop_at is not None and all(p is None or p.end > stop_at for p in pending)


class LiveModeFailed(ConfigError):
    """A step kept failing: live mode stops, saying which and why."""


def serve_ui(port: int, stack: LocalStack) -> subprocess.Popen[bytes]:
    """The Dagster webserver on this instance (no daemon: this process ticks the sensors)."""
    home = instance_home()
    return subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-w", str(WORKSPACE), "-h", "127.0.0.1",
                             "-p", str(port)], env=stack.code_location_env(home), cwd=home, preexec_fn=die_with_parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_live(stack: LocalStack, state: LiveClockState, clock_file: LiveClockFile, stop: GracefulStop,
             tick_seconds: float, say: Callable[[str], None]) -> LiveMode:
    live = LiveMode(stack, managed_instance(), clock_file, state, say)
    clock = live.clock
    say(f"live mode at x{state.speed:g} from {live.local(clock.sim_at)} (simulated; "
        f"{timedelta(seconds=state.speed)} of it per wall second). Ctrl-C stops; make live resumes.")
    live.save(clock.sim_at, running=True)
    reached = clock.sim_at
    while True:
        stop.check(f"at {live.local(reached)} (simulated); make live resumes there")
        now = clock.sim(datetime.now(UTC))  # bookkeeping: the live mapping of the wall clock onto simulated time
        stop.call(live.settle_catalogue)
        step = stop.call(lambda now=now: live.step(now))
        reached = now
        live.save(reached, running=True)
        if live.finished():
            return live
        if step in (None, "sales"):
            pause = time.monotonic() + tick_seconds
            while time.monotonic() < pause and stop.requested is None:
                time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the chain on a clock: receipts appear as their time arrives.")
    parser.add_argument("--speed", type=float, help="simulated seconds per wall second (default 60, or the "
                                                    "stopped session's)")
    parser.add_argument("--start", help="'now' or a simulated time, e.g. 2026-06-01T09:00 (default: resume, "
                                        "or the world's first opening)")
    parser.add_argument("--stop-at", help="stop once the shifts ending by this simulated time are closed")
    parser.add_argument("--tick", type=float, default=1.0, help="wall seconds between sales batches (default 1)")
    parser.add_argument("--ui", action="store_true", help="also serve the Dagster UI on this instance")
    parser.add_argument("--port", type=int, default=3000, help="the UI's port (default 3000)")
    parser.add_argument("--sync-api-port", type=int, default=urlsplit(DEFAULT_SYNC_API_URL).port,
                        help="the stand-in Sync API's port, where `python -m rossmann_local.sync_api change` finds it "
                             "(default 8765; unused when ROSSMANN_SYNC_API_URL names a Sync API)")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    ui = None
    try:
        world = load_world()
        if args.speed is not None and not args.speed > 0:
            raise ConfigError(f"--speed must be above 0, got {args.speed:g}")
        if not args.tick > 0:
            raise ConfigError(f"--tick must be above 0, got {args.tick:g}")
        start = parse_moment(args.start, world, "--start") if args.start else None
        stop_at = parse_moment(args.stop_at, world, "--stop-at") if args.stop_at else None
        with GracefulStop() as stop, local_stack(world, sync_api_port=args.sync_api_port,
                                                  command="make live") as stack:
            preflight(world, stack.resources)
            if stack.store is not None:
                say(f"Sync API stand-in on {stack.sync_api.base_url}: a change made now takes effect at the live "
                    "clock's time, e.g. python -m rossmann_local.sync_api change price --product 1 --city Berlin "
                    "--price 1.99")
            clock_file = LiveClockFile()
            managed_instance()
            state = session_start(world, clock_file, stack.shop_databases, start, args.speed, stop_at)
            if args.ui:
                ui = serve_ui(args.port, stack)
                say(f"Dagster UI on http://127.0.0.1:{args.port} (runs: filter by tag rossmann_local/run)")
            live = None
            try:
                live = run_live(stack, state, clock_file, stop, args.tick, say)
                say(f"stopped at {live.local(live.state.sim_reached)} (simulated): --stop-at reached or the "
                    f"world's last shift sold. {live.receipts} receipts written live in {live.batches} batches.")
            finally:
                current = clock_file.read()
                if current is not None:
                    clock_file.write(current.model_copy(update={"running": False}))
    except StopRequested as exc:
        print(f"{exc}", file=sys.stderr)
        return 0
    except ConfigError as exc:
        print(f"live mode stopped: {exc}", file=sys.stderr)
        return 2
    finally:
        if ui is not None:
            ui.terminate()
            try:
                ui.wait(timeout=30)
            except subprocess.TimeoutExpired:
                ui.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
