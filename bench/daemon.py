"""Through Dagster's daemon (not in CI): ``python -m bench.daemon [--runs 3] [--days 2]``.

Starts ``make dev`` on a fresh data dir (its own broker and stand-in, the SQLite instance) as a user
would, and measures what a UI user waits for: the webserver answering, one shop x shift partition of
``shop_shift_job`` launched as the UI launches it (the run queue, the default run launcher, a process
for the run), then another shop's partition on the now warm instance, and a backfill of every shop
over ``--days`` days (the backfill daemon: a shop's shifts in order, a tick of its 30 s loop per
shift). With ``--stream N``, N catalogue price messages are then sent to the broker at once, and timed
until every shop applied them: the sensor's upsert runs through the run queue, each a process of its
own (a run per 500,000 messages at most, applied 50,000 at a time). Each repetition starts from a
fresh data dir; prints every repetition and the medians.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import click

from bench.run import price_messages
from bench.scale import ASSETS
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.topics import PRODUCT_TOPIC
from rossmann_local.domain.world import World, reference_world
from rossmann_local.local.broker import LocalBroker
from rossmann_local.local.dagster_ui import running_dev
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import KAFKA_BOOTSTRAP_SERVERS
from rossmann_local.shop.catalogue import catalogue_lag
from rossmann_local.shop_db.cache import catalogue_offsets


def _wait(what: str, done: Callable[[], bool], timeout: float = 900) -> None:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.2)


def _has_product_position(shops: ShopDatabases, shop_id: int) -> bool:
    with shops.transaction(shop_id) as conn:
        return any(topic == PRODUCT_TOPIC for topic, _ in catalogue_offsets(conn))


def stream_through_the_daemon(world: World, kafka: KafkaResource, shops: ShopDatabases,
                              messages: int) -> dict[str, float]:
    """Send ``messages`` price messages at once; the seconds until every shop applied them. A first
    message is applied before: a shop with no position on a partition yet counts as caught up."""
    first, *outgoing = price_messages(world, messages + 1)
    if kafka.produce_confirmed([first], timeout=60).unconfirmed:
        raise SystemExit("the broker did not confirm the first catalogue message")
    _wait("every shop applying the first catalogue message",
          lambda: all(_has_product_position(shops, shop_id) for shop_id in world.shop_ids), timeout=300)
    started = time.monotonic()
    if kafka.produce_confirmed(outgoing, timeout=120).unconfirmed:
        raise SystemExit("the broker did not confirm every catalogue message")
    sent = time.monotonic()
    _wait(f"every shop applying the {messages} catalogue messages",
          lambda: catalogue_lag(world, world.shop_ids, shops, kafka) == 0)
    applied = time.monotonic() - started
    return {f"{messages} catalogue messages, send to applied (s)": applied,
            "  of it after the broker confirmed the last (s)": time.monotonic() - sent,
            "  messages/s": messages / applied}


def _through_the_ui(world: World, keys: list[str], days: int, stream: int, env: dict[str, str],
                    tmp: Path) -> dict[str, float]:
    """What a UI user waits for, on ``make dev`` started in ``env`` (which names the broker)."""
    started = time.monotonic()
    with running_dev(env, tmp / "dev.log") as ui:
        figures = {"webserver answers (s)": time.monotonic() - started}
        # The first run on the fresh instance (it also creates ClickHouse's tables and the topics), then
        # another shop's partition: what a user launching partitions one by one waits for after that.
        for key, figure in ((keys[0], "one partition, launch to success (s)"),
                            (keys[1], "  another shop's, after it (s)")):
            launched = time.monotonic()
            run = ui.launch_partition_run("shop_shift_job", key, dict(zip(("shift", "shop"), key.split("|"),
                                                                            strict=True)))
            if (status := ui.wait_for_run(run)) != "SUCCESS":
                raise SystemExit(f"the one-partition run {run} ended {status}; see {tmp}/dev.log")
            figures[figure] = time.monotonic() - launched
        launched = time.monotonic()
        backfill = ui.launch_backfill(ASSETS, keys)
        if (status := ui.wait_for_backfill(backfill, timeout=1800)) != "COMPLETED_SUCCESS":
            raise SystemExit(f"the backfill {backfill} ended {status}")
        figures[f"backfill {days} day(s) x {len(world.shops)} shops (s)"] = time.monotonic() - launched
        if stream:  # every shop has synced its catalogue in the backfill
            shops = ShopDatabases(sqlite_dir=str(tmp / "data" / "shops"))
            figures |= stream_through_the_daemon(world, KafkaResource(bootstrap_servers=env[KAFKA_BOOTSTRAP_SERVERS]),
                                                 shops, stream)
            shops.dispose()
    return figures


def one_repetition(days: int, stream: int) -> dict[str, float]:
    world = reference_world()
    keys = [f"{shift.start:%Y-%m-%d-%H:%M}|{shop.shop_id}"
            for day in range(days) for shift in shifts_of_day(world, world.start_date + timedelta(days=day))
            for shop in world.shops]
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROSSMANN_", "DAGSTER_", "KAFKA_"))}
        env.update(ROSSMANN_DATA_DIR=str(Path(tmp) / "data"), TZ="UTC")
        # The broker is the bench's own (make dev then starts none), so the bench can write to it.
        with LocalBroker(Path(tmp) / "kafka") as broker:
            env[KAFKA_BOOTSTRAP_SERVERS] = broker.bootstrap_servers
            return _through_the_ui(world, keys, days, stream, env, Path(tmp))


@click.command(help=__doc__.splitlines()[0])
@click.option("--runs", type=int, default=3, show_default=True)
@click.option("--days", type=int, default=2, show_default=True)
@click.option("--stream", type=int, default=0, show_default=True,
              help="catalogue price messages sent after the backfill and timed until every shop applied them")
def main(**options: int) -> None:
    args = SimpleNamespace(**options)
    reps = []
    for n in range(args.runs):
        reps.append(one_repetition(args.days, args.stream))
        print(f"repetition {n + 1}: " + ", ".join(f"{name} {value:.1f}" for name, value in reps[-1].items()),
              flush=True)
    print(f"\n{'measured (make dev, fresh data dir)':<45} " + " ".join(f"{f'run {i + 1}':>7}" for i in range(len(reps)))
          + f" {'median':>7}")
    for name in reps[0]:
        values = [r[name] for r in reps]
        print(f"{name:<45} " + " ".join(f"{v:>7.1f}" for v in values) + f" {statistics.median(values):>7.1f}")


if __name__ == "__main__":
    main()
