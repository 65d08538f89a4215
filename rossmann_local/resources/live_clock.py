"""Where live mode keeps its clock: ``<data dir>/live/clock.json``, written by ``make live``.

The file holds the mapping of the simulated clock onto the wall clock (an anchor and a speed), the
first shift of the live session, and how far simulated time got; the live sensor reads it. Only
the mapping reads the wall clock: every fact written is dated in simulated time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from rossmann_local.domain.clock import LiveClock
from rossmann_local.settings import ConfigError, data_dir

CLOCK_FILE = Path("live") / "clock.json"


class LiveClockState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    speed: float = Field(gt=0)
    sim_at: AwareDatetime  # the anchor: this simulated moment ...
    wall_at: AwareDatetime  # ... was reached at this wall moment
    first_shift: AwareDatetime  # the start of the session's first shift
    sim_reached: AwareDatetime  # how far live mode got (where a restart resumes)
    running: bool
    stop_at: AwareDatetime | None = None
    chain_changes: bool = True  # the chain's day of catalogue changes entered through the Sync API's admin

    @property
    def clock(self) -> LiveClock:
        return LiveClock(self.sim_at, self.wall_at, self.speed)


class LiveClockFile(dg.ConfigurableResource):
    """Live mode's clock file. ``pinned_sim_utc`` fixes the simulated 'now' of one evaluation (the
    driver pins it before it applies the catalogue changes published up to then, so the sales it
    writes never run ahead of the catalogue the shop has)."""

    path: str = ""  # default: <data dir>/live/clock.json
    pinned_sim_utc: str = ""

    def file(self) -> Path:
        return Path(self.path) if self.path else data_dir() / CLOCK_FILE

    def read(self) -> LiveClockState | None:
        try:
            text = self.file().read_text()
        except FileNotFoundError:
            return None
        try:
            return LiveClockState.model_validate_json(text)
        except ValidationError as exc:
            raise ConfigError(f"live mode's clock file {self.file()} is unreadable ({exc.errors()[0]['msg']}); "
                              "remove it and start live mode with --start") from None

    def write(self, state: LiveClockState) -> None:
        target = self.file()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_text(state.model_dump_json(indent=2))
        partial.replace(target)  # atomic: the sensor reads the old state or the new one

    def now(self, state: LiveClockState, behind: timedelta = timedelta(0)) -> datetime:
        """Simulated 'now': the pinned time, or the clock's reading of the wall clock ``behind`` ago."""
        if self.pinned_sim_utc:
            return datetime.fromisoformat(self.pinned_sim_utc)
        # Bookkeeping of live mode's mapping (wall clock -> simulated time); every fact is dated in simulated time.
        return state.clock.sim(datetime.now(UTC) - behind)
