"""The scenario ledger: every fault a scenario injected, labelled, in a table a user can read
(``scenario_ledger`` in ``<data dir>/scenario_ledger.sqlite`` by default, any SQLAlchemy URL
otherwise). A day's rows are replaced as a whole, so planning a day again never doubles it."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, date, datetime

import dagster as dg
from sqlalchemy import Engine, String, create_engine, delete, insert, make_url, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rossmann_local.domain.provenance import Provenance
from rossmann_local.domain.scenario import FAULT_KINDS, LedgerEntry, Scenario
from rossmann_local.domain.world import World
from rossmann_local.resources import resolved
from rossmann_local.settings import SCENARIO, data_dir, load_scenario


class LedgerBase(DeclarativeBase):
    pass


class LedgerRow(LedgerBase):
    """One injected fault: the scenario and seed, the day, what was injected on which topic and key,
    and the effective time (UTC, simulated) of the catalogue message it concerns."""

    __tablename__ = "scenario_ledger"
    day: Mapped[date] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    scenario: Mapped[str] = mapped_column(String(80))
    seed: Mapped[int]
    kind: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(255))
    message_key: Mapped[str] = mapped_column(String(255))
    effective_at_utc: Mapped[datetime]
    detail: Mapped[str] = mapped_column(String(500))


class ScenarioLedger(dg.ConfigurableResource):
    """Which scenario runs (a shipped name or a TOML file; none: the world as it is) and where its
    ledger is kept."""

    scenario: str | None = None
    url: str | None = None

    def loaded(self) -> Scenario | None:
        return load_scenario(resolved(self.scenario))

    def provenance(self, world: World) -> Provenance:
        """The headers' common part for what a run under this scenario produces (``domain.provenance``)."""
        scenario = self.loaded()
        return Provenance.of(world, scenario.name if scenario is not None else None)

    def resolved_url(self) -> str:
        return resolved(self.url) or f"sqlite:///{data_dir() / 'scenario_ledger.sqlite'}"

    def describe(self) -> str:
        """Where the ledger is, for the summary (without a password)."""
        where = make_url(self.resolved_url()).render_as_string(hide_password=True)
        return f"table {LedgerRow.__tablename__} in {where}"

    def engine(self) -> Engine:
        url = self.resolved_url()
        if url.startswith("sqlite:///"):
            data_dir().mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        LedgerBase.metadata.create_all(engine)
        return engine

    def write_day(self, scenario: Scenario | None, day: date, entries: list[LedgerEntry]) -> None:
        """The day's ledger, replacing what it held (none with no scenario)."""
        engine = self.engine()
        try:
            with engine.begin() as conn:
                conn.execute(delete(LedgerRow).where(LedgerRow.day == day))
                if scenario is not None and entries:
                    conn.execute(insert(LedgerRow), [
                        {"day": e.day, "number": e.number, "scenario": scenario.name, "seed": scenario.seed,
                         "kind": e.kind, "topic": e.topic, "message_key": e.key,
                         "effective_at_utc": e.effective_at.astimezone(UTC).replace(tzinfo=None),
                         "detail": e.detail} for e in entries])
        finally:
            engine.dispose()

    def counts(self, day: date) -> dict[str, int]:
        """How many faults of each kind the ledger holds for the day (every kind, zeros included)."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                kinds = Counter(conn.scalars(select(LedgerRow.kind).where(LedgerRow.day == day)))
        finally:
            engine.dispose()
        return {kind: kinds.get(kind, 0) for kind in FAULT_KINDS}


def scenario_ledger_from_env() -> ScenarioLedger:
    return ScenarioLedger(scenario=dg.EnvVar(SCENARIO) if os.environ.get(SCENARIO) else None)
