"""Live mode's clock: the world's one simulated clock mapped onto the wall clock at a speed.

A backfill runs simulated time as fast as the machine allows; live mode lets it pass at ``speed``
simulated seconds per wall second from an anchor (a simulated moment and the wall moment it was
reached). Nothing in the simulation reads this clock: it only decides *how much* of a shift has
happened, and the rows written for that part are the ones a backfill writes for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.world import World


@dataclass(frozen=True)
class LiveClock:
    sim_at: datetime  # a simulated moment (aware) ...
    wall_at: datetime  # ... and the wall moment (aware) at which the clock showed it
    speed: float  # simulated seconds per wall second: 1 is real time, 60 a minute per second

    def __post_init__(self) -> None:
        if self.sim_at.tzinfo is None or self.wall_at.tzinfo is None:
            raise ValueError("the live clock needs aware times")
        if not self.speed > 0:
            raise ValueError(f"speed must be above 0, got {self.speed}")

    def sim(self, wall: datetime) -> datetime:
        """The simulated time at wall time ``wall``."""
        return self.sim_at + (wall - self.wall_at) * self.speed

    def wall(self, sim: datetime) -> datetime:
        """The wall time at which the clock shows simulated time ``sim``."""
        return self.wall_at + (sim - self.sim_at) / self.speed


# Live mode's ceiling on what it writes and sends, in events (receipts and stock messages) per wall
# second, unless told otherwise: low, so a high --speed on a large world cannot flood a laptop's broker.
DEFAULT_MAX_EVENTS_PER_SECOND = 100.0


def events_per_simulated_second(world: World) -> float:
    """Receipts and stock messages per simulated second while the shops are open: every terminal serves
    a customer every ``customer_interval_minutes``, every shop reports its stock every
    ``stock_report_interval_minutes``."""
    terminals = sum(len(shop.terminal_ids) for shop in world.shops)
    sales = world.sales
    return (terminals / (sales.customer_interval_minutes * 60)
            + len(world.shops) / (sales.stock_report_interval_minutes * 60))


def capped_speed(world: World, speed: float, max_events_per_second: float) -> float:
    """``speed``, or the highest speed at which the world's events stay within the ceiling."""
    if not max_events_per_second > 0:
        raise ValueError(f"the ceiling must be above 0 events/s, got {max_events_per_second:g}")
    return min(speed, max_events_per_second / events_per_simulated_second(world))


def shift_at_or_after(world: World, moment: datetime) -> ShiftWindow | None:
    """The shift open at ``moment``, or the next one to open (None after the world's last day)."""
    local = moment.astimezone(ZoneInfo(world.timezone))
    day = max(local.date(), world.start_date)
    while day <= world.end_date:
        for shift in shifts_of_day(world, day):
            if moment < shift.end:
                return shift
        day += timedelta(days=1)
    return None


def previous_shift(world: World, shift: ShiftWindow) -> ShiftWindow | None:
    """The shift before ``shift`` (the day before's last after a day's first), None for the world's first."""
    day = shift.local_date
    while day >= world.start_date:
        earlier = [s for s in shifts_of_day(world, day) if s.start < shift.start]
        if earlier:
            return earlier[-1]
        day -= timedelta(days=1)
    return None


def next_shift(world: World, shift: ShiftWindow) -> ShiftWindow | None:
    """The shift after ``shift`` (the next day's first after a day's last), None after the world's end."""
    return shift_at_or_after(world, shift.end)
