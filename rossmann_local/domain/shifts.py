"""A shift as the simulation sees it: an explicit window of simulated time, never a global clock."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from rossmann_local.domain.world import World

CENT = Decimal("0.01")


@dataclass(frozen=True)
class ShiftWindow:
    """[start, end) of one shift, timezone-aware in the chain's time zone."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None or self.end <= self.start:
            raise ValueError(f"a shift needs an aware start before its end, got {self.start}..{self.end}")

    @property
    def code(self) -> int:
        """``yymmddHHMM`` of the local start: readable, and the prefix of the shift's record ids."""
        return int(self.start.strftime("%y%m%d%H%M"))

    @property
    def local_date(self) -> date:
        return self.start.date()

    def at(self, local_time_of_day: time) -> datetime:
        return datetime.combine(self.local_date, local_time_of_day, tzinfo=self.start.tzinfo)

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def shift_window(world: World, start: datetime) -> ShiftWindow:
    """The shift of the world's layout that starts at ``start`` (any aware time or a naive local one)."""
    tz = ZoneInfo(world.timezone)
    local = start.replace(tzinfo=tz) if start.tzinfo is None else start.astimezone(tz)
    layout = world.shift_layout
    starts = [datetime.combine(local.date(), t, tzinfo=tz) for t in layout.shift_starts]
    if local not in starts:
        raise ValueError(f"{local.isoformat()} is not a shift start of {layout.shift_starts}")
    index = starts.index(local)
    ends = [*starts[1:], datetime.combine(local.date(), layout.closes, tzinfo=tz)]
    return ShiftWindow(start=local, end=ends[index])


def shifts_of_day(world: World, day: date) -> list[ShiftWindow]:
    tz = ZoneInfo(world.timezone)
    return [shift_window(world, datetime.combine(day, t, tzinfo=tz)) for t in world.shift_layout.shift_starts]


def shift_index(world: World, shift: ShiftWindow) -> int:
    """0 for the first shift of the day, 1 for the second, ..."""
    return world.shift_layout.shift_starts.index(shift.start.timetz().replace(tzinfo=None))


def seeded_rng(*parts: object) -> random.Random:
    """A generator seeded from its parts with a stable hash (Python's hash() changes per process)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def inflation_factor(world: World, day: date) -> Decimal:
    """Prices inflate by ``inflation_rate`` every ``inflation_period_days`` since the world's start."""
    periods = max(0, (day - world.start_date).days) // world.sales.inflation_period_days
    return (1 + world.sales.inflation_rate) ** periods


def round_money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)
