"""Apply a batch of catalogue messages to every shop: parse strictly, set bad ones aside, upsert
the rest per shop in one versioned, set-based statement per table.

Effects are idempotent (versioned upserts), so applying a range again (at-least-once delivery)
changes nothing the first application did not. A message that parses but that a shop's database
refuses (e.g. a barcode another product holds) is isolated by applying the batch message by
message, and dead-lettered with the database's reason; the others still apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from rossmann_local.domain.world import Shop, World
from rossmann_local.resources.kafka import RawMessage
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop_db.cache import UpsertCounts, upsert_categories, upsert_product_changes
from rossmann_local.streaming.messages import (
    CategoryMessage,
    DeadLetter,
    ProductMessage,
    parse_catalogue_message,
)


@dataclass
class ApplyOutcome:
    messages: int = 0
    applied: int = 0  # message x shop pairs that changed a row
    stale: int = 0  # message x shop pairs skipped: the shop held the same or a newer version
    price_without_city: int = 0  # product messages applied as description-only (no city)
    placeholder_categories: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def add(self, counts: UpsertCounts) -> None:
        self.applied += counts.applied
        self.stale += counts.stale
        self.placeholder_categories += counts.placeholders

    def as_metadata(self) -> dict[str, int]:
        return {"messages": self.messages, "applied": self.applied, "skipped_as_stale": self.stale,
                "price_without_city": self.price_without_city, "dead_lettered": len(self.dead_letters),
                "placeholder_categories": self.placeholder_categories}


@dataclass(frozen=True)
class _Parsed:
    raw: RawMessage
    message: CategoryMessage | ProductMessage  # ProductMessage covers description messages too


def _apply_to_shop(shops: ShopDatabases, shop: Shop, batch: Sequence[_Parsed]) -> tuple[UpsertCounts, UpsertCounts]:
    categories = [p.message for p in batch if isinstance(p.message, CategoryMessage)]
    products = [p.message.change_for(shop.city)[0] for p in batch if not isinstance(p.message, CategoryMessage)]
    with shops.transaction(shop.shop_id) as conn:
        return upsert_categories(conn, categories), upsert_product_changes(conn, products)


def apply_catalogue_messages(world: World, shops: ShopDatabases, raw: Sequence[RawMessage]) -> ApplyOutcome:
    outcome = ApplyOutcome(messages=len(raw))
    parsed: list[_Parsed] = []
    for message in raw:
        result = parse_catalogue_message(message.topic, message.value)
        if isinstance(result, str):
            outcome.dead_letters.append(DeadLetter(message.topic, message.partition, message.offset, result,
                                                   message.value))
        else:
            parsed.append(_Parsed(message, result))
    outcome.price_without_city = sum(1 for p in parsed if isinstance(p.message, ProductMessage) and not p.message.city)
    refused: dict[int, str] = {}
    for shop in world.shops:
        batch = [p for p in parsed if p.raw.offset not in refused]
        try:
            for counts in _apply_to_shop(shops, shop, batch):
                outcome.add(counts)
        except IntegrityError:
            for one in batch:  # find the message(s) the database refuses; apply each other one alone
                try:
                    for counts in _apply_to_shop(shops, shop, [one]):
                        outcome.add(counts)
                except IntegrityError as exc:
                    refused[one.raw.offset] = f"shop {shop.shop_id} refused it: {str(exc.orig).splitlines()[0]}"
    outcome.dead_letters += [DeadLetter(p.raw.topic, p.raw.partition, p.raw.offset, refused[p.raw.offset], p.raw.value)
                             for p in parsed if p.raw.offset in refused]
    return outcome
