"""The shop x shift partitions and the schedule built from the partitioned job."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from rossmann_local.defs import build_definitions
from rossmann_local.defs.partitions import shift_partitions, shop_and_shift, shop_shift_partitions
from rossmann_local.domain.world import ShiftLayout, World, reference_world

BERLIN = ZoneInfo("Europe/Berlin")


def test_two_six_hour_shifts_inside_opening_hours_and_none_overnight(world: World) -> None:
    shifts = shift_partitions(world)
    keys = shifts.get_partition_keys(current_time=datetime(2026, 6, 3, 8, 0, tzinfo=BERLIN))
    assert keys == ["2026-06-01-09:00", "2026-06-01-15:00", "2026-06-02-09:00", "2026-06-02-15:00"]
    windows = [shifts.time_window_for_partition_key(k) for k in keys[:2]]
    assert [(w.start.hour, w.end.hour) for w in windows] == [(9, 15), (15, 21)]
    assert all(w.end.date() == w.start.date() for w in windows)


def test_partition_keys_name_shift_then_shop(world: World) -> None:
    keys = shop_shift_partitions(world).get_partition_keys(current_time=datetime(2026, 6, 1, 22, 0, tzinfo=BERLIN))
    assert keys[:2] == ["2026-06-01-09:00|1", "2026-06-01-09:00|2"]
    assert len(keys) == 2 * 5
    shop, shift = shop_and_shift(world, "2026-06-01-15:00|4")
    assert shop.city == "La Nucia"
    assert (shift.start, shift.end) == (datetime(2026, 6, 1, 15, tzinfo=BERLIN),
                                        datetime(2026, 6, 1, 21, tzinfo=BERLIN))


def test_another_layout_is_configuration() -> None:
    world = reference_world().model_copy(update={"shift_layout": ShiftLayout(
        opens=time(8), closes=time(20), shift_starts=(time(8), time(12), time(16)))})
    shifts = shift_partitions(world)
    keys = shifts.get_partition_keys(current_time=datetime(2026, 6, 1, 23, 0, tzinfo=BERLIN))
    assert [(shifts.time_window_for_partition_key(k).start.hour, shifts.time_window_for_partition_key(k).end.hour)
            for k in keys] == [(8, 12), (12, 16), (16, 20)]


@pytest.mark.parametrize("starts", [(time(10), time(15)), (time(15), time(9)), (time(9), time(21))])
def test_inconsistent_layouts_are_refused(starts: tuple[time, ...]) -> None:
    with pytest.raises(ValueError):
        ShiftLayout(shift_starts=starts)


def test_many_shops_give_many_static_partitions() -> None:
    partitions = shop_shift_partitions(reference_world(shop_count=100))
    shops = next(d for d in partitions.partitions_defs if d.name == "shop").partitions_def
    assert shops.get_partition_keys() == [str(i) for i in range(1, 101)]


@pytest.mark.parametrize(("tick", "shift"), [(15, "2026-06-02-09:00"), (21, "2026-06-02-15:00")])
def test_schedule_runs_every_shop_when_a_shift_ends(world: World, tick: int, shift: str) -> None:
    defs = build_definitions(world, resources={})
    schedule = next(iter(defs.schedules))  # type: ignore[arg-type]
    schedule = defs.resolve_schedule_def(schedule.name)
    assert schedule.cron_schedule == "0 9,15,21 * * *" and schedule.execution_timezone == "Europe/Berlin"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 6, 2, tick, tzinfo=BERLIN))
    requests = schedule.evaluate_tick(context).run_requests
    assert sorted(r.partition_key for r in requests) == [f"{shift}|{shop}" for shop in "12345"]
    assert len({r.run_key for r in requests}) == 5


def test_opening_tick_repeats_last_nights_run_keys_so_nothing_runs_twice(world: World) -> None:
    """The cron also ticks at opening (the start of the excluded overnight window); Dagster's
    builder then re-requests the previous evening's shift with the same run keys, which the
    daemon skips as already requested."""
    schedule = build_definitions(world, resources={}).resolve_schedule_def("shop_shift_schedule")

    def run_keys(moment: datetime) -> set[str]:
        context = dg.build_schedule_context(scheduled_execution_time=moment)
        return {r.run_key for r in schedule.evaluate_tick(context).run_requests}

    closing = run_keys(datetime(2026, 6, 2, 21, tzinfo=BERLIN))
    assert run_keys(datetime(2026, 6, 3, 9, tzinfo=BERLIN)) == closing


def test_automation_default_states_are_deliberate(world: World) -> None:
    """The sensor applies Kafka's catalogue changes as soon as the UI starts; the schedule would
    simulate shifts in real time, so it waits to be switched on."""
    defs = build_definitions(world, resources={})
    assert defs.get_sensor_def("catalogue_changes_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.get_schedule_def("shop_shift_schedule").default_status == dg.DefaultScheduleStatus.STOPPED
