"""Partitions: one per shop x shift. The shift layout lives in the world config (ShiftLayout);
this file only turns it into Dagster partitions, in one place."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

import dagster as dg

from rossmann_local.domain.shifts import ShiftWindow, shift_window
from rossmann_local.domain.world import Shop, UnknownShop, World
from rossmann_local.settings import SHOP_COUNT, WORLD_FILE, ConfigError

SHIFT_KEY_FORMAT = "%Y-%m-%d-%H:%M"
SHOP_SHIFT_JOB = "shop_shift_job"
# A run still to finish: queued, starting, under way, or being cancelled.
UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
PARTITION_TAG = "dagster/partition"  # the partition key of a single-partition run, as Dagster tags it


@functools.cache
def _first_look_at_the_wall_clock() -> datetime:
    """When this process first built partitions: all its definitions count from the same moment."""
    # bookkeeping, wall clock: not a time of the simulated world, only how far Dagster, which measures its
    # partitions against the wall clock, must look ahead to offer every day of the world
    return datetime.now(UTC)


def _load_day(loaded_at: datetime | None, timezone: str) -> date:
    """The day, in ``timezone``, the process loaded its definitions (``loaded_at`` for a test)."""
    return (loaded_at or _first_look_at_the_wall_clock()).astimezone(ZoneInfo(timezone)).date()


def shifts_to_the_worlds_end(world: World, loaded_at: datetime | None = None) -> int:
    """How many shift windows Dagster must look past the wall clock (``end_offset``) for every shift of
    the world to be a partition: those up to the world's last day, none once that day is past (``end``
    stops there).

    Dagster walks these windows one by one, with croniter and uncached (its cache is keyed by the
    current time), each time it asks for a first or last partition: several times in every run, launch
    and backfill tick. A whole world's worth (730 shifts) was 0.15 s a time and 0.5 s of a one-partition
    run. Counted when the process loads its definitions, the figure stays enough as the wall clock moves
    on (fewer windows are left)."""
    days_left = max(0, (world.end_date - _load_day(loaded_at, world.timezone)).days + 1)
    return days_left * len(world.shift_layout.shift_starts)


def day_partitions(world: World, loaded_at: datetime | None = None) -> dg.DailyPartitionsDefinition:
    """One partition per day of the world: the chain's jobs and the per-day assets. Every day of the
    world exists whatever today's date (``end_offset`` reaches past the wall clock, ``end_date`` stops
    at the world's last day), as the shift partitions do.

    Unlike theirs, this offset does not shrink with the load day: a time-window definition standing
    alone is stored with what it partitions (a backfill's subsets) under an id that includes its offset,
    so an offset that changed with the day would strand such a backfill across a reload. The world's
    length is enough from its first day on (plus the days still to its start, before), and a daily cron
    takes Dagster's fast path: 3.4 ms for a first and a last window."""
    until_start = max(0, (world.start_date - _load_day(loaded_at, "UTC")).days)
    return dg.DailyPartitionsDefinition(start_date=world.start_date.isoformat(),
                                        end_date=(world.end_date + timedelta(days=1)).isoformat(),
                                        end_offset=world.days + until_start)


def shift_partitions(world: World, loaded_at: datetime | None = None) -> dg.TimeWindowPartitionsDefinition:
    """One window per shift of every day of the world, in the chain's time zone.

    The cron adds closing time so the last shift ends at closing; the exclusion drops the window
    that would start at closing and run overnight. The world runs on its own clock, not the wall
    clock's: every shift of every day exists whatever today's date (``end_offset`` reaches past the
    wall clock to the world's last shift, ``end`` stops there). The offset is counted from the load
    day (``shifts_to_the_worlds_end``); it may differ after a reload, which stored subsets survive:
    Dagster keys a shop x shift subset by the multi-partition class alone.
    """
    layout = world.shift_layout
    first = datetime.combine(world.start_date, layout.opens)
    after_last = datetime.combine(world.end_date + timedelta(days=1), layout.opens)
    return dg.TimeWindowPartitionsDefinition(
        start=first.strftime(SHIFT_KEY_FORMAT),
        end=after_last.strftime(SHIFT_KEY_FORMAT),
        end_offset=shifts_to_the_worlds_end(world, loaded_at),
        cron_schedule=layout.cron_schedule,
        exclusions=layout.exclusions,
        fmt=SHIFT_KEY_FORMAT,
        timezone=world.timezone,
    )


def shop_shift_partitions(world: World) -> dg.MultiPartitionsDefinition:
    """Keys read ``"<shift>|<shop>"`` (Dagster orders dimensions by name), e.g. ``2026-06-01-09:00|1``."""
    return dg.MultiPartitionsDefinition({
        "shift": shift_partitions(world),
        "shop": dg.StaticPartitionsDefinition([str(s) for s in world.shop_ids]),
    })


# A run over a range of partitions carries its first and last key in these tags: Dagster's own
# single-run backfills do, and its maintainers document them for launching such a run by hand
# (dagster-io/dagster discussion #11653). Dagster exports no public name or RunRequest argument for
# them (the constants live in a private module of Dagster's core storage), so they are spelled here.
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def range_tags(first: str, last: str) -> dict[str, str]:
    """The tags of one run over the partitions from ``first`` to ``last`` (per dimension, for shop x shift)."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}


def partition_key(shift: ShiftWindow, shop_id: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"shift": shift.start.strftime(SHIFT_KEY_FORMAT), "shop": str(shop_id)})


def shop_and_shift(world: World, key: str | dg.MultiPartitionKey) -> tuple[Shop, ShiftWindow]:
    """The shop and shift window a partition key names."""
    if not isinstance(key, dg.MultiPartitionKey):
        shift_key, shop_key = key.split("|")
        key = dg.MultiPartitionKey({"shift": shift_key, "shop": shop_key})
    dims = key.keys_by_dimension
    local_start = datetime.strptime(dims["shift"], SHIFT_KEY_FORMAT)
    try:
        shop = world.shop(int(dims["shop"]))
    except UnknownShop as exc:
        raise ConfigError(f"{exc}; check {SHOP_COUNT} / {WORLD_FILE}") from None
    return shop, shift_window(world, local_start)


# A shop's shift starts from what its previous shift left: the shift's assets depend on their own
# previous shift of the same shop, so Dagster's backfill daemon launches a shop's shifts in shift order
# (each once the one before it is materialized), the shops side by side.
PREVIOUS_SHIFT = dg.MultiPartitionMapping({
    "shift": dg.DimensionPartitionMapping("shift", dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)),
    "shop": dg.DimensionPartitionMapping("shop", dg.IdentityPartitionMapping()),
})


class ShopShift(NamedTuple):
    """One partition of a run: its key (as the run names it), the shop and the shift window."""

    key: str
    shop: Shop
    shift: ShiftWindow


def partitions_in_order(world: World, keys: Sequence[str]) -> list[ShopShift]:
    """The partitions of a run, earliest shift first, then by shop."""
    found = [ShopShift(key, *shop_and_shift(world, key)) for key in keys]
    return sorted(found, key=lambda p: (p.shift.start, p.shop.shop_id))


def shops_of_run(world: World, tags: Mapping[str, str]) -> set[int]:
    """The shops a shop x shift run sells: its partition's shop, or each shop of its range (a range over
    shop x shift keys spans the shops between its first and last key's, as Dagster plans it)."""
    if PARTITION_TAG in tags:
        return {shop_and_shift(world, tags[PARTITION_TAG])[0].shop_id}
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        first, last = (shop_and_shift(world, tags[t])[0].shop_id for t in (RANGE_START_TAG, RANGE_END_TAG))
        return {shop_id for shop_id in world.shop_ids if first <= shop_id <= last}
    return set(world.shop_ids)  # a run of the job without partitions: take it as every shop's


def shops_being_sold(instance: dg.DagsterInstance, world: World) -> set[int]:
    """The shops a queued or running shift run is selling. Dagster's run queue holds a shop's
    single-partition runs one at a time (dagster.yaml), but not a range run beside them: what requests
    shift runs by itself (the schedule, the selling-again sensor) waits while the shop is in one."""
    runs = instance.get_runs(dg.RunsFilter(job_name=SHOP_SHIFT_JOB, statuses=UNFINISHED))
    return {shop_id for run in runs for shop_id in shops_of_run(world, run.tags)}
