"""Through Dagster's daemon (not in CI): ``python -m bench.daemon [--runs 3] [--days 2]``.

Starts ``make dev`` on a fresh data dir (its own broker and stand-in, the SQLite instance) as a user
would, and measures what a UI user waits for: the webserver answering, one shop x shift partition of
``shop_shift_job`` launched as the UI launches it (the run queue, the default run launcher, a process
for the run), and a backfill of every shop over ``--days`` days (the backfill daemon: a shop's shifts
in order, a tick of its 30 s loop per shift). Each repetition starts from a fresh data dir; prints
every repetition and the medians.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import click

from bench.scale import ASSETS
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.world import reference_world
from rossmann_local.local.dagster_ui import running_dev


def one_repetition(days: int) -> dict[str, float]:
    world = reference_world()
    keys = [f"{shift.start:%Y-%m-%d-%H:%M}|{shop.shop_id}"
            for day in range(days) for shift in shifts_of_day(world, world.start_date + timedelta(days=day))
            for shop in world.shops]
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROSSMANN_", "DAGSTER_", "KAFKA_"))}
        env.update(ROSSMANN_DATA_DIR=str(Path(tmp) / "data"), TZ="UTC")
        started = time.monotonic()
        with running_dev(env, Path(tmp) / "dev.log") as ui:
            figures = {"webserver answers (s)": time.monotonic() - started}
            first = keys[0]
            launched = time.monotonic()
            run = ui.launch_partition_run("shop_shift_job", first, dict(zip(("shift", "shop"), first.split("|"),
                                                                              strict=True)))
            if (status := ui.wait_for_run(run)) != "SUCCESS":
                raise SystemExit(f"the one-partition run {run} ended {status}; see {tmp}/dev.log")
            figures["one partition, launch to success (s)"] = time.monotonic() - launched
            launched = time.monotonic()
            backfill = ui.launch_backfill(ASSETS, keys)
            if (status := ui.wait_for_backfill(backfill, timeout=1800)) != "COMPLETED_SUCCESS":
                raise SystemExit(f"the backfill {backfill} ended {status}")
            figures[f"backfill {days} day(s) x {len(world.shops)} shops (s)"] = time.monotonic() - launched
        return figures


@click.command(help=__doc__.splitlines()[0])
@click.option("--runs", type=int, default=3, show_default=True)
@click.option("--days", type=int, default=2, show_default=True)
def main(**options: int) -> None:
    args = SimpleNamespace(**options)
    reps = []
    for n in range(args.runs):
        reps.append(one_repetition(args.days))
        print(f"repetition {n + 1}: " + ", ".join(f"{name} {value:.1f}" for name, value in reps[-1].items()),
              flush=True)
    print(f"\n{'measured (make dev, fresh data dir)':<45} " + " ".join(f"{f'run {i + 1}':>7}" for i in range(len(reps)))
          + f" {'median':>7}")
    for name in reps[0]:
        values = [r[name] for r in reps]
        print(f"{name:<45} " + " ".join(f"{v:>7.1f}" for v in values) + f" {statistics.median(values):>7.1f}")


if __name__ == "__main__":
    main()
