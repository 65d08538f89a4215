"""Scenarios: seeded, labelled faults added to some days of the chain.

A scenario is a TOML file (``scenarios/*.toml``) validated here field by field. It adds a burst of
promotions to the chain's catalogue (real changes, part of the catalogue's history), changes the
chain enters late (after the shift they take effect in synced and sold), faults on what the stream
delivers (duplicates, older versions delivered after newer ones, malformed messages), a Sync API
outage at a shift start and a broker pause. Everything is planned from the scenario's seed, the world
and the day alone, so the same scenario and seed give the same faults, and each is labelled in the
ledger (``LedgerEntry``) with what was injected, when and on which topic and key.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rossmann_local.domain.catalogue_changes import (
    PROMOTIONS,
    CatalogueChange,
    DescriptionChange,
    PriceChange,
    afternoon_promotion,
)
from rossmann_local.domain.shifts import seeded_rng, shifts_of_day
from rossmann_local.domain.world import World

DUPLICATE, OUT_OF_ORDER, MALFORMED, PROMOTION = "duplicate", "out_of_order", "malformed", "promotion"
LATE, SYNC_API_OUTAGE, BROKER_PAUSE = "late", "sync_api_outage", "broker_pause"
FAULT_KINDS = (PROMOTION, LATE, DUPLICATE, OUT_OF_ORDER, MALFORMED, SYNC_API_OUTAGE, BROKER_PAUSE)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromotionBurst(_Part):
    """``products`` products (at most the catalogue's, the everyday promotion's aside) cut in every city
    from the day's ``shift`` (0 = first) until the next day opens, each by a seeded factor between
    ``lowest_factor`` and 0.95."""

    products: int = Field(ge=1, le=10_000)
    shift: int = Field(1, ge=0, le=23)
    lowest_factor: Decimal = Field(Decimal("0.50"), gt=0, le=Decimal("0.95"))


class Share(_Part):
    """The share of the day's catalogue messages this fault hits (each drawn from the seed)."""

    share: float = Field(ge=0, le=1)


class Late(_Part):
    """The share of the day's changes taking effect during one of its shifts that the chain enters
    ``minutes`` after they took effect: after that shift synced and sold, so it is sold again."""

    share: float = Field(ge=0, le=1)
    minutes: int = Field(ge=1, le=24 * 60)


class Malformed(_Part):
    """About ``per_hundred`` malformed messages per hundred catalogue messages of the day."""

    per_hundred: float = Field(ge=0, le=100)


class SyncApiOutage(_Part):
    """The Sync API is down at the start of the day's ``shift``: it refuses the first
    ``refused_requests`` sync requests (503). The shops' sync retries twice, so up to 2 are ridden out."""

    shift: int = Field(ge=0, le=23)
    refused_requests: int = Field(1, ge=1, le=2)


class BrokerPause(_Part):
    """The broker stops answering for ``minutes`` simulated minutes from the start of the day's ``shift``."""

    shift: int = Field(ge=0, le=23)
    minutes: int = Field(ge=1, le=120)


class Scenario(_Part):
    """What a scenario file holds. Days default to every day of the world."""

    name: str = Field(min_length=1, max_length=80, pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    seed: int = Field(ge=0)
    first_day: date | None = None
    last_day: date | None = None
    promotion_burst: PromotionBurst | None = None
    late: Late | None = None
    duplicates: Share | None = None
    out_of_order: Share | None = None
    malformed: Malformed | None = None
    sync_api_outage: SyncApiOutage | None = None
    broker_pause: BrokerPause | None = None

    @model_validator(mode="after")
    def _days_in_order(self) -> Scenario:
        if self.first_day and self.last_day and self.last_day < self.first_day:
            raise ValueError(f"last_day {self.last_day} is before first_day {self.first_day}")
        return self

    def outage_shift(self, day: date) -> int | None:
        """The shift (0 = the day's first) whose start finds the Sync API down, if any."""
        return self.sync_api_outage.shift if self.sync_api_outage and self.covers(day) else None

    def pause_shift(self, day: date) -> int | None:
        """The shift from whose start the broker is paused, if any."""
        return self.broker_pause.shift if self.broker_pause and self.covers(day) else None

    def covers(self, day: date) -> bool:
        return (self.first_day is None or day >= self.first_day) and (self.last_day is None or day <= self.last_day)


class ScenarioError(ValueError):
    """A scenario file that cannot be used: the message names the file and each bad field."""


def parse_scenario(text: str, source: str) -> Scenario:
    """The scenario in a TOML text; ``source`` (its file name) goes into every error."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source} is not TOML: {exc}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'scenario'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise ScenarioError(f"{source} is not a valid scenario: {problems}") from None


def promotion_burst(scenario: Scenario, world: World, day: date) -> list[PriceChange]:
    """The burst's price cuts and, at the next day's opening, the regular prices back, drawn from the
    scenario's seed and the day: the same scenario and day give the same changes."""
    burst = scenario.promotion_burst
    if burst is None or not scenario.covers(day):
        return []
    shifts = shifts_of_day(world, day)
    start = shifts[min(burst.shift, len(shifts) - 1)].start
    back = shifts_of_day(world, day + timedelta(days=1))[0].start
    rng = seeded_rng("promotion-burst", scenario.seed, day.isoformat())
    # Not the everyday promotion's products: two prices of one product and city in effect from the
    # same moment would leave the history without an order.
    everyday = {product_id for product_id, _city, _factor in PROMOTIONS}
    candidates = [p for p in world.products if p.product_id not in everyday]
    products = rng.sample(candidates, min(burst.products, len(candidates)))
    changes = []
    for product in sorted(products, key=lambda p: p.product_id):
        for city in sorted(product.prices):
            regular = product.prices[city]
            factor = Decimal(rng.randint(int(burst.lowest_factor * 100), 95)) / 100
            cut = max(Decimal("0.01"), (regular.price * factor).quantize(Decimal("0.01")))
            changes.append(PriceChange(product.product_id, city, cut, regular.discount, start))
            changes.append(PriceChange(product.product_id, city, regular.price, regular.discount, back))
    return changes


def day_changes(scenario: Scenario | None, world: World, day: date) -> list[CatalogueChange]:
    """Every catalogue change the chain makes on the day, in the order it makes them: the afternoon
    promotion, then the scenario's burst."""
    return afternoon_promotion(world, day) + (promotion_burst(scenario, world, day) if scenario else [])


@dataclass(frozen=True)
class LedgerEntry:
    """One injected fault, as the user reads it: what (``kind``, ``detail``), on which topic and key,
    and the effective time of the message it concerns. ``number`` orders the day's entries."""

    day: date
    number: int
    kind: str
    topic: str
    key: str
    effective_at: datetime
    detail: str


@dataclass(frozen=True)
class StreamFault:
    """A fault on the stream: its ledger entry and the change whose message it delivers again (or
    spoils, for a malformed one)."""

    entry: LedgerEntry
    change: CatalogueChange


# What a malformed message looks like, by form: not JSON, a field of the wrong type, a message cut short.
MALFORMED_FORMS = ("not JSON", "a field of the wrong type", "cut short")


def malformed_payload(payload: str, form: str) -> str:
    """The message's JSON spoiled in the given form (one of ``MALFORMED_FORMS``)."""
    if form == MALFORMED_FORMS[0]:
        return "<html>502 Bad Gateway</html>"
    if form == MALFORMED_FORMS[1]:
        data = json.loads(payload)
        field = "price" if "price" in data else "name"
        return json.dumps({**data, field: "seven" if field == "price" else 7})
    return payload[: max(1, len(payload) // 2)]


def _utc(moment: datetime) -> str:
    """A moment as the ledger's details write it."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def plan_stream_faults(scenario: Scenario, day: date, changes: Sequence[CatalogueChange]) -> list[StreamFault]:
    """The day's faults on the messages of its changes (in the order the chain made them): a message
    delivered again, an older version of a key delivered after its newer one (on its topic, or a
    product's price message after its newer description), a malformed message.
    Each change draws from its own seeded generator, so one change's draw never shifts another's."""
    if not scenario.covers(day):
        return []
    faults: list[StreamFault] = []

    def add(kind: str, change: CatalogueChange, detail: str) -> None:
        entry = LedgerEntry(day, len(faults) + 1, kind, change.topic, change.key, change.at, detail)
        faults.append(StreamFault(entry, change))

    newest: dict[tuple[str, str], CatalogueChange] = {}
    prices_of: dict[int, list[PriceChange]] = {}  # each product's price changes of the day
    for change in changes:
        if isinstance(change, PriceChange):
            prices_of.setdefault(change.product_id, []).append(change)
    for index, change in enumerate(changes):
        rng = seeded_rng("stream-faults", scenario.seed, day.isoformat(), index)
        duplicate, reorder, spoil, form = rng.random(), rng.random(), rng.random(), rng.choice(MALFORMED_FORMS)
        across = rng.random()
        older = newest.get((change.topic, change.key))
        if older is None or change.at >= older.at:
            newest[(change.topic, change.key)] = change
        if (scenario.out_of_order and isinstance(change, DescriptionChange)
                and across < scenario.out_of_order.share
                and (earlier := [c for c in prices_of.get(change.product_id, []) if c.at < change.at])):
            # Across topics: a product message (it carries the descriptive fields too) older than a
            # description message, delivered after it: its description must not win.
            price = max(earlier, key=lambda c: (c.at, c.city))
            add(OUT_OF_ORDER, price, f"the version of {_utc(price.at)} on {price.topic} delivered after the "
                f"description of {_utc(change.at)} on {change.topic}")
        if scenario.duplicates and duplicate < scenario.duplicates.share:
            add(DUPLICATE, change, "delivered twice")
        if (scenario.out_of_order and older is not None and older.at < change.at
                and reorder < scenario.out_of_order.share):
            add(OUT_OF_ORDER, older, f"the version of {_utc(older.at)} delivered after the one of {_utc(change.at)}")
        if scenario.malformed and spoil < scenario.malformed.per_hundred / 100:
            add(MALFORMED, change, f"malformed: {form}")
    return faults


@dataclass(frozen=True)
class DayPlan:
    """A scenario's day: the chain's catalogue changes, the faults on their messages, and the ledger
    (the burst's changes labelled, the outage and the pause, then the stream's faults), all from the
    scenario, the world and the day."""

    changes: list[CatalogueChange]  # entered on time (before the shift they take effect in)
    late: list[CatalogueChange]  # entered after the day's shifts, dated when they took effect
    faults: list[StreamFault]
    ledger: list[LedgerEntry]


def late_changes(scenario: Scenario, world: World, day: date, changes: Sequence[CatalogueChange]
                 ) -> list[CatalogueChange]:
    """The changes the chain enters late: of those taking effect within one of the day's shifts, a
    seeded share (each change draws from its own generator)."""
    if scenario.late is None or not scenario.covers(day):
        return []
    shifts = shifts_of_day(world, day)
    return [change for index, change in enumerate(changes)
            if any(s.start <= change.at < s.end for s in shifts)
            and seeded_rng("late", scenario.seed, day.isoformat(), index).random() < scenario.late.share]


def plan_day(scenario: Scenario, world: World, day: date) -> DayPlan:
    every = day_changes(scenario, world, day)
    late = late_changes(scenario, world, day, every)
    changes = [c for c in every if c not in late]
    burst = promotion_burst(scenario, world, day)
    ledger = [LedgerEntry(day, i + 1, PROMOTION, c.topic, c.key, c.at, f"price {c.price} ({scenario.name}'s burst)")
              for i, c in enumerate(burst)]
    shifts = shifts_of_day(world, day)
    if (shift := scenario.outage_shift(day)) is not None and scenario.sync_api_outage:
        at = shifts[min(shift, len(shifts) - 1)].start
        ledger.append(LedgerEntry(day, len(ledger) + 1, SYNC_API_OUTAGE, "", "Sync API", at,
                                  f"down at the shift start: the first {scenario.sync_api_outage.refused_requests} "
                                  "sync request(s) refused with 503, then retried by the shops"))
    if (shift := scenario.pause_shift(day)) is not None and scenario.broker_pause:
        at = shifts[min(shift, len(shifts) - 1)].start
        ledger.append(LedgerEntry(day, len(ledger) + 1, BROKER_PAUSE, "", "broker", at,
                                  f"paused for {scenario.broker_pause.minutes} simulated minutes from the shift start"))
    minutes = scenario.late.minutes if scenario.late else 0
    ledger += [LedgerEntry(day, len(ledger) + 1 + i, LATE, c.topic, c.key, c.at,
                           f"entered {minutes} min after it took effect ({_utc(c.at + timedelta(minutes=minutes))}), "
                           "after its shift had synced and sold: the shift is sold again") for i, c in enumerate(late)]
    faults = [StreamFault(LedgerEntry(day, len(ledger) + f.entry.number, f.entry.kind, f.entry.topic, f.entry.key,
                                      f.entry.effective_at, f.entry.detail), f.change)
              for f in plan_stream_faults(scenario, day, changes)]
    return DayPlan(changes, late, faults, ledger + [f.entry for f in faults])
