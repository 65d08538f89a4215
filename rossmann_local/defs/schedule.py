"""The shift schedule: the world's next shift of every shop, on the world's own clock.

A tick never maps the wall clock's date onto the world (that would leave a gap of unsold shifts
behind it, and a shift refuses to run before its predecessor): it reads where each shop stands in
its database and requests that shop's next shift to sell, one run per shop x shift partition. The
run key is the partition key, so a tick repeated while the run is under way requests nothing new; a
shop with a shift run queued or under way (the selling-again sensor's range run among them) is left
to the next tick, so its shifts never sell side by side.
"""

import dagster as dg

from rossmann_local.defs.partitions import partition_key, shops_being_sold
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.world import World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop.shift import shop_progress

SHIFT_SCHEDULE = "shop_shift_schedule"


def build_shift_schedule(world: World, shop_shift_job: "dg.UnresolvedAssetJobDefinition") -> dg.ScheduleDefinition:
    first_shift = shifts_of_day(world, world.start_date)[0]

    @dg.schedule(name=SHIFT_SCHEDULE, job=shop_shift_job, cron_schedule=world.shift_layout.cron_schedule,
                 execution_timezone=world.timezone, default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="At the shift times on the wall clock (opening, each change of shift, closing), sell "
                             "every shop's next shift of the world (its own clock: the first shift the shop "
                             "has not sold), in shift order (off until switched on).")
    def shop_shift_schedule(context: dg.ScheduleEvaluationContext,
                            shop_databases: ShopDatabases) -> list[dg.RunRequest] | dg.SkipReason:
        requests = []
        busy = shops_being_sold(context.instance, world)
        for shop in world.shops:
            if shop.shop_id in busy:
                continue  # its run under way (or one selling it again) first; the next tick requests it
            shift = shop_progress(world, shop, first_shift.start, shop_databases).shift
            if shift is not None:
                key = str(partition_key(shift, shop.shop_id))
                requests.append(dg.RunRequest(run_key=key, partition_key=key))
        if requests:
            return requests
        sold_all = f"sold every shift of the world (to {world.end_date})"
        return dg.SkipReason(f"shops {sorted(busy)} have a shift run queued or under way, the others {sold_all}"
                             if busy else f"every shop {sold_all}")

    return shop_shift_schedule
