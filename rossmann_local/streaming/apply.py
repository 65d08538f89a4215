"""Apply a batch of catalogue messages to every shop: parse strictly, set bad ones aside, fold the
rest to what can still change anything, and upsert per shop in one versioned, set-based statement
per table.

Folding first: of all messages for a product, only the newest descriptive state, and per city the
newest price, can change a row; older ones are stale whatever the shops hold. So the fan-out to the
shops handles a few rows, not every message. A message counts as applied when it is the newest for
its key and changed some shop's row, else as skipped as stale (older than what the shops hold, or
superseded within the range).

Effects are idempotent, so applying a range again (at-least-once delivery) changes nothing. A
message that parses but that a shop's database refuses (e.g. a barcode another product holds) is
isolated by applying the batch message by message, and dead-lettered with the database's reason;
the others still apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy.exc import IntegrityError

from rossmann_local.domain.world import Shop, World
from rossmann_local.resources.kafka import RawMessage
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop_db.cache import ProductChange, upsert_categories, upsert_product_changes
from rossmann_local.streaming.messages import (
    CategoryMessage,
    DeadLetter,
    ProductDescriptionMessage,
    ProductMessage,
    parse_catalogue_message,
)


@dataclass
class ApplyOutcome:
    messages: int = 0
    applied: int = 0  # messages that were the newest for their key and changed some shop's row
    stale: int = 0  # messages that changed nothing: older than the shops' rows, or superseded
    rows_changed: int = 0  # shop rows changed, summed over the shops
    price_without_city: int = 0  # product messages applied as description-only (no city)
    placeholder_categories: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def as_metadata(self) -> dict[str, int]:
        return {"messages": self.messages, "applied": self.applied, "skipped_as_stale": self.stale,
                "rows_changed": self.rows_changed, "price_without_city": self.price_without_city,
                "dead_lettered": len(self.dead_letters), "placeholder_categories": self.placeholder_categories}


@dataclass(frozen=True)
class _Parsed:
    raw: RawMessage
    message: CategoryMessage | ProductDescriptionMessage


@dataclass
class _Folded:
    """The messages that can still change something: newest per category, per product (descriptive
    fields) and per product and city (price)."""

    categories: dict[int, _Parsed] = field(default_factory=dict)
    products: dict[int, _Parsed] = field(default_factory=dict)
    prices: dict[tuple[int, str], _Parsed] = field(default_factory=dict)

    def add(self, parsed: _Parsed) -> None:
        m = parsed.message
        if isinstance(m, CategoryMessage):
            _keep_newest(self.categories, m.category_id, parsed)
            return
        _keep_newest(self.products, m.product_id, parsed)
        if isinstance(m, ProductMessage) and m.city:
            _keep_newest(self.prices, (m.product_id, m.city), parsed)

    @classmethod
    def of(cls, batch: Iterable[_Parsed]) -> _Folded:
        folded = cls()
        for parsed in batch:
            folded.add(parsed)
        return folded

    def changes_for(self, city: str) -> list[ProductChange]:
        changes = []
        for product_id, parsed in self.products.items():
            described = parsed.message
            change = ProductChange(**described.model_dump(include=_PRODUCT_FIELDS))
            if (priced := self.prices.get((product_id, city))) is not None:
                m = priced.message
                change = replace(change, price=m.price, discount=m.discount, price_updated_at_utc=m.updated_at_utc)
            changes.append(change)
        return changes


_PRODUCT_FIELDS = {"product_id", "category_id", "name", "description", "barcode", "is_deleted", "updated_at_utc"}


def _keep_newest(newest: dict, key: object, parsed: _Parsed) -> None:
    current = newest.get(key)
    if current is None or parsed.message.updated_at_utc > current.message.updated_at_utc:
        newest[key] = parsed


Coordinates = tuple[str, int, int]  # topic, partition, offset: a message's identity


def _coordinates(parsed: _Parsed) -> Coordinates:
    return parsed.raw.topic, parsed.raw.partition, parsed.raw.offset


@dataclass(frozen=True)
class _ShopResult:
    changed_by: set[Coordinates]  # the messages whose change landed in this shop
    rows_changed: int
    placeholders: int


def _apply_to_shop(shops: ShopDatabases, shop: Shop, folded: _Folded) -> _ShopResult:
    with shops.transaction(shop.shop_id) as conn:
        categories = upsert_categories(conn, [p.message for p in folded.categories.values()])
        products = upsert_product_changes(conn, folded.changes_for(shop.city))
    changed_by = {_coordinates(folded.categories[c]) for c in categories.changed_ids}
    for product_id in products.changed_ids:
        changed_by.add(_coordinates(folded.products[product_id]))
        if (priced := folded.prices.get((product_id, shop.city))) is not None:
            changed_by.add(_coordinates(priced))
    return _ShopResult(changed_by, categories.applied + products.applied, products.placeholders)


def _parse(raw: Sequence[RawMessage], outcome: ApplyOutcome) -> Iterator[_Parsed]:
    """The messages that parse; the others become dead letters in ``outcome``."""
    for message in raw:
        result = parse_catalogue_message(message.topic, message.value)
        if isinstance(result, str):
            outcome.dead_letters.append(DeadLetter(message.topic, message.partition, message.offset, result,
                                                   message.value))
        else:
            yield _Parsed(message, result)


def apply_catalogue_messages(world: World, shops: ShopDatabases, raw: Sequence[RawMessage]) -> ApplyOutcome:
    outcome = ApplyOutcome(messages=len(raw))
    # Fold while parsing: only the newest message per key stays alive, not every parsed message.
    folded = _Folded()
    parsed_count = 0
    for parsed in _parse(raw, outcome):
        parsed_count += 1
        outcome.price_without_city += isinstance(parsed.message, ProductMessage) and not parsed.message.city
        folded.add(parsed)
    refused: dict[Coordinates, str] = {}
    applied: set[Coordinates] = set()

    def record(result: _ShopResult) -> None:
        applied.update(result.changed_by)
        outcome.rows_changed += result.rows_changed
        outcome.placeholder_categories += result.placeholders

    for shop in world.shops:
        try:
            record(_apply_to_shop(shops, shop, folded))
        except IntegrityError:
            # The rare path: find the message(s) this shop's database refuses, apply each other one alone,
            # and leave the refused ones out for the shops after it.
            survivors = [p for p in _parse(raw, ApplyOutcome()) if _coordinates(p) not in refused]
            for one in survivors:
                try:
                    record(_apply_to_shop(shops, shop, _Folded.of([one])))
                except IntegrityError as exc:
                    refused[_coordinates(one)] = f"shop {shop.shop_id} refused it: {str(exc.orig).splitlines()[0]}"
            folded = _Folded.of(p for p in survivors if _coordinates(p) not in refused)
    by_coordinates = {(m.topic, m.partition, m.offset): m for m in raw if (m.topic, m.partition, m.offset) in refused}
    outcome.dead_letters += [DeadLetter(*key, reason, by_coordinates[key].value) for key, reason in refused.items()]
    outcome.applied = len(applied)
    outcome.stale = parsed_count - len(refused) - outcome.applied
    return outcome
