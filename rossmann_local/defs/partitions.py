"""Partitions: one per shop x shift. The shift layout lives in the world config (ShiftLayout);
this file only turns it into Dagster partitions, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import dagster as dg

from rossmann_local.domain.shifts import ShiftWindow, shift_window
from rossmann_local.domain.world import Shop, UnknownShop, World
from rossmann_local.settings import SHOP_COUNT, WORLD_FILE, ConfigError

SHIFT_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def shift_partitions(world: World) -> dg.TimeWindowPartitionsDefinition:
    """One window per shift of every day from the world's start, in the chain's time zone.

    The cron adds closing time so the last shift ends at closing; the exclusion drops the window
    that would start at closing and run overnight.
    """
    layout = world.shift_layout
    first = datetime.combine(world.start_date, layout.opens)
    return dg.TimeWindowPartitionsDefinition(
        start=first.strftime(SHIFT_KEY_FORMAT),
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


# A shop's shift starts from the stock its previous shift left: shift_transactions depends on its own
# previous shift of the same shop, so a backfill runs a shop's sales in shift order.
PREVIOUS_SHIFT = dg.MultiPartitionMapping({
    "shift": dg.DimensionPartitionMapping("shift", dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)),
    "shop": dg.DimensionPartitionMapping("shop", dg.IdentityPartitionMapping()),
})

# A backfill of many shop x shift partitions runs as one run (not one process per partition): each
# asset's step walks its partitions in shift order, so every shop's shifts happen in sequence.
SINGLE_RUN_BACKFILL = dg.BackfillPolicy.single_run()


class ShopShift(NamedTuple):
    """One partition of a run: its key (as the run names it), the shop and the shift window."""

    key: str
    shop: Shop
    shift: ShiftWindow


def partitions_in_order(world: World, keys: Sequence[str]) -> list[ShopShift]:
    """The partitions of a run, earliest shift first, then by shop."""
    found = [ShopShift(key, *shop_and_shift(world, key)) for key in keys]
    return sorted(found, key=lambda p: (p.shift.start, p.shop.shop_id))
