"""What the chain's admin side changes in the catalogue on a day, as data: the everyday afternoon
promotion and, under a scenario, its burst of promotions. Each change carries the simulated time it
takes effect, so it is part of that day's history and a day can be run (and re-run) in any order.
The stand-in Sync API applies them (``local.chain_admin``); the scenario ledger plans its faults on
the messages they make (``domain.scenario``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.topics import CATEGORY_TOPIC, PRODUCT_DESCRIPTION_TOPIC, PRODUCT_TOPIC
from rossmann_local.domain.world import World

PROMOTIONS = ((1, "Berlin", Decimal("0.80")), (9, "Nurnberg", Decimal("0.75")))  # product, city, price factor
DESCRIBED_PRODUCT = 7
RENAMED_CATEGORY = (4, "Decor & Home")


def product_key(product_id: int, city: str | None = None) -> str:
    """What a product message versions: ``product 7 Berlin`` (a city's price) or ``product 7``."""
    return f"product {product_id} {city}" if city else f"product {product_id}"


def category_key(category_id: int) -> str:
    return f"category {category_id}"


def message_key(topic: str, payload: str) -> str:
    """The key of a catalogue message's JSON, as its change names it (``CatalogueChange.key``)."""
    data = json.loads(payload)
    if topic == CATEGORY_TOPIC:
        return category_key(data["category_id"])
    return product_key(data["product_id"], data.get("city") if topic == PRODUCT_TOPIC else None)


@dataclass(frozen=True)
class PriceChange:
    product_id: int
    city: str
    price: Decimal
    discount: Decimal
    at: datetime
    topic = PRODUCT_TOPIC

    @property
    def key(self) -> str:
        return product_key(self.product_id, self.city)


@dataclass(frozen=True)
class DescriptionChange:
    product_id: int
    description: str
    at: datetime
    topic = PRODUCT_DESCRIPTION_TOPIC

    @property
    def key(self) -> str:
        return product_key(self.product_id)


@dataclass(frozen=True)
class CategoryNameChange:
    category_id: int
    name: str
    at: datetime
    topic = CATEGORY_TOPIC

    @property
    def key(self) -> str:
        return category_key(self.category_id)


CatalogueChange = PriceChange | DescriptionChange | CategoryNameChange


def _promotion(world: World, at: datetime, promoted: bool) -> list[CatalogueChange]:
    """The promotion's prices, description and category name (or the regular ones), from ``at``."""
    products = {p.product_id: p for p in world.products}
    changes: list[CatalogueChange] = []
    for product_id, city, factor in PROMOTIONS:
        regular = products[product_id].prices[city]
        price = (regular.price * factor).quantize(Decimal("0.01")) if promoted else regular.price
        changes.append(PriceChange(product_id, city, price, regular.discount, at))
    described = products[DESCRIBED_PRODUCT]
    changes.append(DescriptionChange(DESCRIBED_PRODUCT, f"{described.name}: now in a larger pack"
                                     if promoted else described.description, at))
    category_id, name = RENAMED_CATEGORY
    changes.append(CategoryNameChange(category_id, name if promoted else next(
        c.name for c in world.categories if c.category_id == category_id), at))
    return changes


def afternoon_promotion(world: World, day: date) -> list[CatalogueChange]:
    """An afternoon promotion, the same every day: from the day's second shift Berlin and Nurnberg get
    cheaper prices on two products, a product gets a new description and a category a new name;
    the next morning the regular ones are back."""
    afternoon = shifts_of_day(world, day)[1].start
    next_morning = shifts_of_day(world, day + timedelta(days=1))[0].start
    return _promotion(world, afternoon, promoted=True) + _promotion(world, next_morning, promoted=False)
