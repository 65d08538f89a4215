"""The one fold of catalogue changes, and the one rule of whose price a shop takes.

Of many changes to the same category or product only the newest can change a shop's row, so a
batch (a Sync API answer, a range of Kafka messages) is folded to the newest version per key
before anything is written. Products fold twice: their descriptive fields per product, their price
per product and city. A shop takes a price only from a change priced for its own city: a Sync API
record is priced for the shop that asked; a product message for the ``city`` it names, and for
no shop when it names none (docs/contracts.md defect 1).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from rossmann_local.domain.messages import CatalogueMessage, CategoryMessage, ProductMessage

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
S = TypeVar("S")

PRODUCT_FIELDS = ("category_id", "name", "description", "barcode", "is_deleted")
CATEGORY_FIELDS = ("category_id", "name", "description", "is_deleted", "updated_at_utc")


class Versioned(Protocol):
    """A category or product version: a Sync API record or a Kafka message (their fields by name:
    ``CATEGORY_FIELDS``; ``PRODUCT_FIELDS``, and ``price`` and ``discount`` where priced)."""

    @property
    def updated_at_utc(self) -> datetime: ...


V = TypeVar("V", bound=Versioned)


def keep_newest(newest: dict[K, V], key: K, item: V) -> None:
    """Keep ``item`` under ``key`` when it is newer than what is there (a range of messages passes
    here by the hundred thousand: the times are compared directly)."""
    current = newest.get(key)
    if current is None or item.updated_at_utc > current.updated_at_utc:
        newest[key] = item


@dataclass(frozen=True)
class ProductChange:
    """What one shop takes for one product: the descriptive fields at ``updated_at_utc`` and, when
    the batch held a price for this shop's city, the price at ``price_updated_at_utc`` (None: the
    price is not part of this change)."""

    product_id: int
    category_id: int
    name: str
    description: str | None
    barcode: str
    is_deleted: bool
    updated_at_utc: datetime
    price: Decimal | None = None
    discount: Decimal | None = None
    price_updated_at_utc: datetime | None = None


class Sourced(NamedTuple, Generic[T, S]):
    """A version, where it came from (a Kafka message's coordinates; None for the Sync API) and its
    time. A tuple, with the time a field of its own: a range of messages makes one per message, and
    the fold compares their times by the hundred thousand."""

    version: T
    source: S
    updated_at_utc: datetime


@dataclass
class CatalogueFold(Generic[S]):
    """The newest category per id, product per id and price per (product, city) of a batch."""

    categories: dict[int, Sourced[Versioned, S]] = field(default_factory=dict)
    products: dict[int, Sourced[Versioned, S]] = field(default_factory=dict)
    prices: dict[tuple[int, str], Sourced[Versioned, S]] = field(default_factory=dict)

    def add_category(self, category: Versioned, source: S = None) -> None:  # type: ignore[assignment]
        keep_newest(self.categories, category.category_id, Sourced(category, source, category.updated_at_utc))

    def add_product(self, product: Versioned, source: S = None,  # type: ignore[assignment]
                    priced_for: str | None = None) -> None:
        """The product's descriptive fields, and its price for the city ``priced_for`` if any."""
        sourced = Sourced(product, source, product.updated_at_utc)
        keep_newest(self.products, product.product_id, sourced)
        if priced_for is not None:
            keep_newest(self.prices, (product.product_id, priced_for), sourced)

    def add_message(self, message: CatalogueMessage, source: S) -> None:
        """A Kafka message: a product message carries the price of the city it names, or none."""
        if isinstance(message, CategoryMessage):
            self.add_category(message, source)
        else:
            self.add_product(message, source, message.city if isinstance(message, ProductMessage) else None)

    @classmethod
    def of_synced(cls, categories: Iterable[Versioned], products: Iterable[Versioned],
                  city: str) -> CatalogueFold[None]:
        """A Sync API answer: every product record is priced for the city of the shop that asked."""
        fold: CatalogueFold[None] = CatalogueFold()
        for category in categories:
            fold.add_category(category)
        for product in products:
            fold.add_product(product, priced_for=city)
        return fold

    def category_rows(self) -> list[dict[str, Any]]:
        return [{f: getattr(c.version, f) for f in CATEGORY_FIELDS} for c in self.categories.values()]

    def product_changes_for(self, city: str) -> list[ProductChange]:
        """One change per product for a shop in ``city``: its price only where priced for that city."""
        changes = []
        for product_id, described in self.products.items():
            fields = {f: getattr(described.version, f) for f in PRODUCT_FIELDS}
            change = ProductChange(product_id=product_id, updated_at_utc=described.updated_at_utc, **fields)
            if (priced := self.prices.get((product_id, city))) is not None:
                change = replace(change, price=priced.version.price, discount=priced.version.discount,
                                 price_updated_at_utc=priced.updated_at_utc)
            changes.append(change)
        return changes

    def sources_of_product(self, product_id: int, city: str) -> list[S]:
        """Where the product's change for a shop in ``city`` came from: its description, its price."""
        sources = [self.products[product_id].source]
        if (priced := self.prices.get((product_id, city))) is not None:
            sources.append(priced.source)
        return sources
