"""The shop x shift partitions and the schedule built from the partitioned job."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from rossmann_local.defs import build_definitions
from rossmann_local.defs.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    day_partitions,
    shift_partitions,
    shop_and_shift,
    shop_shift_partitions,
)
from rossmann_local.domain.world import ShiftLayout, World, reference_world
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local_tests.helpers import materialize_shift

BERLIN = ZoneInfo("Europe/Berlin")


def test_two_six_hour_shifts_inside_opening_hours_and_none_overnight(world: World) -> None:
    shifts = shift_partitions(world)
    keys = shifts.get_partition_keys()
    assert keys[:4] == ["2026-06-01-09:00", "2026-06-01-15:00", "2026-06-02-09:00", "2026-06-02-15:00"]
    windows = [shifts.time_window_for_partition_key(k) for k in keys[:2]]
    assert [(w.start.hour, w.end.hour) for w in windows] == [(9, 15), (15, 21)]
    assert all(w.end.date() == w.start.date() for w in windows)


@pytest.mark.parametrize("loaded", [datetime(2025, 1, 1, tzinfo=BERLIN), datetime(2026, 6, 1, 8, tzinfo=BERLIN),
                                    datetime(2026, 12, 2, 12, tzinfo=BERLIN),
                                    datetime(2027, 5, 31, 23, 30, tzinfo=BERLIN), datetime(2031, 1, 1, tzinfo=BERLIN)])
@pytest.mark.parametrize("later", [timedelta(0), timedelta(hours=7), timedelta(days=40), timedelta(days=800)])
def test_every_shift_of_the_world_is_a_partition_whatever_the_wall_clock_says(world: World, loaded: datetime,
                                                                             later: timedelta) -> None:
    """The world runs on its own clock: the UI offers every shift from its first day to its last, with the
    definitions loaded before the world's dates on the wall clock, inside them or after them, and for as
    long as they stay loaded."""
    today = loaded + later
    keys = shift_partitions(world, loaded).get_partition_keys(current_time=today)
    assert len(keys) == world.days * 2
    assert (keys[0], keys[-1]) == ("2026-06-01-09:00", f"{world.end_date:%Y-%m-%d}-15:00")
    # The chain's jobs and the per-day assets alike: a live session or a backfill reaches every day.
    days = day_partitions(world, loaded).get_partition_keys(current_time=today)
    assert (len(days), days[0], days[-1]) == (world.days, "2026-06-01", world.end_date.isoformat())


def test_dagster_walks_past_the_wall_clock_only_to_the_worlds_end(world: World) -> None:
    """Dagster steps through every window of ``end_offset`` each time it asks for a first or last
    partition, so the shifts' offset reaches the world's last day and no further: none once that day is
    past."""
    assert shift_partitions(world, datetime(2026, 5, 31, 12, tzinfo=BERLIN)).end_offset == (world.days + 1) * 2
    assert shift_partitions(world, datetime(2027, 5, 30, 12, tzinfo=BERLIN)).end_offset == 2 * 2
    assert shift_partitions(world, datetime(2027, 6, 1, 0, 30, tzinfo=BERLIN)).end_offset == 0
    # The day partitions' offset stays the world's length once it has started: Dagster stores a backfill
    # of a time-window asset under an id that includes the offset, and a reload must not strand it.
    assert {day_partitions(world, datetime(2026, m, 2, 12, tzinfo=BERLIN)).end_offset for m in (6, 12)} == {world.days}
    assert day_partitions(world, datetime(2031, 1, 1, tzinfo=BERLIN)).end_offset == world.days
    assert day_partitions(world, datetime(2026, 5, 1, 12, tzinfo=BERLIN)).end_offset == world.days + 31


def test_partition_keys_name_shift_then_shop(world: World) -> None:
    keys = shop_shift_partitions(world).get_partition_keys()
    assert keys[:2] == ["2026-06-01-09:00|1", "2026-06-01-09:00|2"]
    assert len(keys) == world.days * 2 * 5
    shop, shift = shop_and_shift(world, "2026-06-01-15:00|4")
    assert shop.city == "La Nucia"
    assert (shift.start, shift.end) == (datetime(2026, 6, 1, 15, tzinfo=BERLIN),
                                        datetime(2026, 6, 1, 21, tzinfo=BERLIN))


def test_another_layout_is_configuration() -> None:
    world = reference_world().model_copy(update={"shift_layout": ShiftLayout(
        opens=time(8), closes=time(20), shift_starts=(time(8), time(12), time(16)))})
    shifts = shift_partitions(world)
    keys = shifts.get_partition_keys()[:4]
    assert [(shifts.time_window_for_partition_key(k).start.hour, shifts.time_window_for_partition_key(k).end.hour)
            for k in keys] == [(8, 12), (12, 16), (16, 20), (8, 12)]


@pytest.mark.parametrize("starts", [(time(10), time(15)), (time(15), time(9)), (time(9), time(21))])
def test_inconsistent_layouts_are_refused(starts: tuple[time, ...]) -> None:
    with pytest.raises(ValueError):
        ShiftLayout(shift_starts=starts)


def test_many_shops_give_many_static_partitions() -> None:
    partitions = shop_shift_partitions(reference_world(shop_count=100))
    shops = next(d for d in partitions.partitions_defs if d.name == "shop").partitions_def
    assert shops.get_partition_keys() == [str(i) for i in range(1, 101)]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """An instance a schedule's context can load by reference (an ephemeral one has none)."""
    with dg.instance_for_test() as instance:
        yield instance


def test_the_schedule_sells_each_shops_next_shift_of_the_world_not_the_wall_clocks(
        world: World, sqlite_shops: ShopDatabases, sync_api: SyncApiClient, instance: dg.DagsterInstance) -> None:
    """A tick on any wall-clock date requests, per shop, the first shift that shop has not sold (its
    own clock), never the wall clock's shift with a gap behind it; shops that are ahead stay ahead."""
    defs = build_definitions(world, resources={})
    schedule = defs.resolve_schedule_def("shop_shift_schedule")
    assert schedule.cron_schedule == "0 9,15,21 * * *" and schedule.execution_timezone == "Europe/Berlin"


    def tick(moment: datetime) -> dict[str, str]:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=moment,
                                       repository_def=defs.get_repository_def(),
                                       resources={"shop_databases": sqlite_shops}) as context:
            return {r.partition_key: r.run_key for r in schedule.evaluate_tick(context).run_requests}

    today = datetime(2026, 12, 2, 15, tzinfo=BERLIN)
    assert tick(today) == {f"2026-06-01-09:00|{shop}": f"2026-06-01-09:00|{shop}" for shop in "12345"}
    first = shop_and_shift(world, "2026-06-01-09:00|1")[1]
    for shop in world.shops[:2]:
        materialize_shift(world, first, shop.shop_id, {"shop_databases": sqlite_shops, "sync_api": sync_api},
                          ("synced_cache", "shift_deliveries", "shift_transactions"))
    ahead = tick(today)
    assert sorted(ahead) == ["2026-06-01-09:00|3", "2026-06-01-09:00|4", "2026-06-01-09:00|5",
                             "2026-06-01-15:00|1", "2026-06-01-15:00|2"]
    assert tick(today) == ahead, "the same tick twice: the same run keys, which the daemon runs once"
    # Shop 2's shifts being sold again (a range run, which the run queue's per-shop limit does not hold):
    # its next shift waits for the next tick, the other shops go on.
    selling_again = dg.DagsterRun(job_name="shop_shift_job", status=dg.DagsterRunStatus.STARTED, tags={
        RANGE_START_TAG: "2026-06-01-09:00|2", RANGE_END_TAG: "2026-06-01-09:00|2"})
    instance.add_run(selling_again)
    assert sorted(tick(today)) == [k for k in sorted(ahead) if not k.endswith("|2")]
    instance.delete_run(selling_again.run_id)
    assert tick(today) == ahead


def test_automation_default_states_are_deliberate(world: World) -> None:
    """The sensors apply Kafka's catalogue changes, sell again what a late change touched and check each
    finished day as soon as the UI starts; the schedule would sell the world's shifts one after another,
    so it waits to be switched on."""
    defs = build_definitions(world, resources={})
    for sensor in ("catalogue_changes_sensor", "sold_again_sensor", "day_answers_sensor"):
        assert defs.resolve_sensor_def(sensor).default_status == dg.DefaultSensorStatus.RUNNING, sensor
    assert defs.get_schedule_def("shop_shift_schedule").default_status == dg.DefaultScheduleStatus.STOPPED
