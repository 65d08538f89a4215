"""Apply a range of catalogue messages to every shop: parse strictly, set bad ones aside, fold the
rest to what can still change anything, and upsert per shop in one versioned, set-based statement
per table.

Folding first (``domain.catalogue_fold``): of all messages for a product, only the newest
descriptive state, and per city the newest price, can change a row; older ones are stale whatever
the shops hold. So the fan-out to the shops handles a few rows, not every message. A message counts
as applied when it is the newest for its key and changed some shop's row, else as skipped as stale
(older than what the shops hold, or superseded within the range).

Effects are idempotent, so applying a range again (at-least-once delivery) changes nothing. A
message that parses but that a shop's database refuses (e.g. a barcode another product holds) is
isolated by applying the batch message by message, and dead-lettered with the database's reason;
the others still apply.

Kafka changes what a shop knows; it does not create: the chain creates products and categories
through the Sync API, which every shop syncs at shift start. A message about a product or category
a shop has never synced, or that moves a product into such a category, is dead-lettered for that
shop (a real new product reaches it with its next sync, in its newest version). A message dated
after the world's end (plus the stated clock skew) is dead-lettered too: keep-newest would let it
freeze the row for ever.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.exc import DataError, IntegrityError

from rossmann_local.domain.catalogue_fold import CatalogueFold
from rossmann_local.domain.messages import (
    CatalogueMessage,
    CategoryMessage,
    DeadLetter,
    ProductMessage,
    parse_catalogue_message,
)
from rossmann_local.domain.provenance import Provenance
from rossmann_local.domain.topics import CATALOGUE_TOPICS, DEAD_LETTER_TOPIC
from rossmann_local.domain.world import Shop, World
from rossmann_local.resources.kafka import KafkaResource, Outgoing, RawMessage
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop_db.cache import (
    advance_catalogue_offsets,
    catalogue_offsets,
    claim_catalogue_offsets,
    upsert_categories,
    upsert_product_changes,
)
from rossmann_local.shop_db.history import VersionBatch, VersionsRecorded
from rossmann_local.shop_db.models import Category, Product

# What a shop's database may refuse in a message that parsed: a constraint (a barcode another product
# holds) or a value (kept out by the domain's validation; here in case a database is stricter).
REFUSALS = (IntegrityError, DataError)


DEAD_LETTER_SOURCE = "dead letters"


class DeadLettersNotDelivered(RuntimeError):
    """The broker did not confirm every dead letter: the run fails and its range is read again."""


@dataclass
class ApplyOutcome:
    messages: int = 0
    applied: int = 0  # messages that were the newest for their key and changed some shop's row
    stale: int = 0  # messages that changed nothing: older than the shops' rows, or superseded
    rows_changed: int = 0  # shop rows changed, summed over the shops
    price_without_city: int = 0  # product messages some shop took as description-only (no city); not dead letters
    placeholder_categories: int = 0
    versions_added: int = 0  # catalogue versions new to a shop's history, summed over the shops
    read_from_behind: int = 0  # messages before the run's ranges, re-read because a shop had not applied them
    tombstones: int = 0  # keyed records with no value: a deletion's compaction marker, after its message
    shifts_touched: set[tuple[int, datetime]] = field(default_factory=set)  # (shop, shift start) sold already
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def add(self, other: ApplyOutcome) -> None:
        """Count in another chunk's outcome (a run applies a long backlog chunk after chunk): every
        count summed, the shifts and dead letters gathered."""
        for name in (f.name for f in fields(self)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, mine | theirs if isinstance(mine, set) else mine + theirs)

    def as_metadata(self) -> dict[str, int]:
        return {"messages": self.messages, "applied": self.applied, "skipped_as_stale": self.stale,
                "rows_changed": self.rows_changed, "price_without_city": self.price_without_city,
                "dead_lettered": len(self.dead_letters), "placeholder_categories": self.placeholder_categories,
                "versions_added": self.versions_added, "late_for_sold_shifts": len(self.shifts_touched),
                "read_from_behind": self.read_from_behind, "tombstones": self.tombstones}


def _versions(messages: Iterable[CatalogueMessage]) -> VersionBatch:
    """Every version the messages carry, for the shops' history (the fold keeps only the newest).

    A product message priced for a city is a version of that city's price, and of the product's
    fields for that city's shops only: the chain sends a price change with the product's fields in
    effect at its time, which changes no description. So a shop's history holds the moments the Sync
    API answers it (description changes and its city's prices), whichever way they came, and a price
    stream costs each shop only its own city's messages."""
    categories: list[CatalogueMessage] = []
    products: list[CatalogueMessage] = []  # descriptions, and product messages priced for no city: every shop's
    priced: dict[str, list[CatalogueMessage]] = {}  # by the city they price
    for message in messages:
        if isinstance(message, CategoryMessage):
            categories.append(message)
        elif isinstance(message, ProductMessage) and message.city:
            priced.setdefault(message.city, []).append(message)
        else:
            products.append(message)
    return VersionBatch(categories, products, priced, city_products=priced)


Coordinates = tuple[str, int, int]  # topic, partition, offset: a message's identity
Parsed = tuple[Coordinates, CatalogueMessage]


@dataclass(frozen=True)
class _ShopResult:
    changed_by: set[Coordinates]  # the messages whose change landed in this shop
    rows_changed: int
    placeholders: int
    history: VersionsRecorded


def _fold(batch: Sequence[Parsed]) -> CatalogueFold[Coordinates]:
    fold: CatalogueFold[Coordinates] = CatalogueFold()
    for coordinates, message in batch:
        fold.add_message(message, coordinates)
    return fold


def _apply_to_shop(shops: ShopDatabases, shop: Shop, fold: CatalogueFold[Coordinates],
                   versions: VersionBatch) -> _ShopResult:
    with shops.transaction(shop.shop_id) as conn:
        categories = upsert_categories(conn, [c.version for c in fold.categories.values()])
        products = upsert_product_changes(conn, fold.product_changes_for(shop.city))
        history = versions.record(conn, shop.city)
    changed_by = {fold.categories[c].source for c in categories.changed_ids}
    for product_id in products.changed_ids:
        changed_by.update(fold.sources_of_product(product_id, shop.city))
    return _ShopResult(changed_by, categories.applied + products.applied, products.placeholders, history)


def _parse(world: World, raw: Sequence[RawMessage], outcome: ApplyOutcome) -> Iterator[Parsed]:
    """The messages that parse and are not dated after the world's end; the others become dead
    letters in ``outcome``."""
    earliest, latest = world.earliest_effective_time, world.latest_effective_time
    for message in raw:
        if message.value is None and message.key:
            outcome.tombstones += 1  # the deletion came before it, with its time: nothing to apply
            continue
        result = parse_catalogue_message(message.topic, message.value)
        if not isinstance(result, str) and not earliest <= result.updated_at_utc <= latest:
            result = world.dated_outside(result.updated_at_utc) or result
        if isinstance(result, str):
            outcome.dead_letters.append(DeadLetter(message.topic, message.partition, message.offset, result,
                                                   message.value))
        else:
            yield (message.topic, message.partition, message.offset), result


def _unknown_to(conn: Connection, batch: Sequence[Parsed], product_ids: set[int],
                category_ids: set[int]) -> dict[Coordinates, str]:
    """The messages about a product or category this shop has never synced, with the reason (the
    batch's ids are looked up once; its messages are walked only when one of them is unknown)."""
    unknown_products = product_ids - set(conn.scalars(select(Product.product_id)
                                                      .where(Product.product_id.in_(product_ids))))
    unknown_categories = category_ids - set(conn.scalars(select(Category.category_id)
                                                         .where(Category.category_id.in_(category_ids))))
    unknown: dict[Coordinates, str] = {}
    if not unknown_products and not unknown_categories:
        return unknown
    for coordinates, message in batch:
        if not isinstance(message, CategoryMessage) and message.product_id in unknown_products:
            unknown[coordinates] = f"unknown product {message.product_id}"
        elif message.category_id in unknown_categories:
            unknown[coordinates] = f"unknown category {message.category_id}"
    return unknown


def apply_catalogue_messages(world: World, shops: ShopDatabases, raw: Sequence[RawMessage]) -> ApplyOutcome:
    outcome = ApplyOutcome(messages=len(raw))
    batch = list(_parse(world, raw, outcome))
    # Each shop gets the messages about what it knows; shops that know the same get one fold.
    product_ids = {m.product_id for _, m in batch if not isinstance(m, CategoryMessage)}
    category_ids = {m.category_id for _, m in batch}
    unknown: dict[int, dict[Coordinates, str]] = {}
    for shop in world.shops:
        with shops.transaction(shop.shop_id) as conn:
            unknown[shop.shop_id] = _unknown_to(conn, batch, product_ids, category_ids)
    groups: dict[frozenset[Coordinates], list[Shop]] = {}
    for shop in world.shops:
        groups.setdefault(frozenset(unknown[shop.shop_id]), []).append(shop)
    refused: dict[Coordinates, str] = {}
    for coordinates in {c for found in unknown.values() for c in found}:
        where = [shop_id for shop_id, found in unknown.items() if coordinates in found]
        reason = next(found[coordinates] for found in unknown.values() if coordinates in found)
        refused[coordinates] = (f"{reason} in shops {where}: Kafka changes what a shop knows, the chain creates "
                                "products and categories through the Sync API (a shop takes them at its next sync)")
    applied: set[Coordinates] = set()

    def record(shop: Shop, result: _ShopResult) -> None:
        applied.update(result.changed_by)
        outcome.rows_changed += result.rows_changed
        outcome.placeholder_categories += result.placeholders
        outcome.versions_added += result.history.added
        outcome.shifts_touched.update((shop.shop_id, start) for start in result.history.shifts_touched)

    # Product messages priced for no city, counted when some shop took them (not set aside for all).
    cityless = [c for c, m in batch if isinstance(m, ProductMessage) and not m.city]
    taken: set[Coordinates] = set()
    for held_back, group in groups.items():
        kept = [p for p in batch if p[0] not in held_back] if held_back else batch
        fold, versions = _fold(kept), _versions(m for _, m in kept)
        for shop in group:
            try:
                record(shop, _apply_to_shop(shops, shop, fold, versions))
            except REFUSALS:
                # The rare path: find the message(s) this shop's database refuses, apply each other one
                # alone, and leave the refused ones out for the shops after it.
                survivors = [p for p in kept if p[0] not in refused]
                for one in survivors:
                    try:
                        record(shop, _apply_to_shop(shops, shop, _fold([one]), _versions([one[1]])))
                    except REFUSALS as exc:
                        refused[one[0]] = f"shop {shop.shop_id} refused it: {str(exc.orig).splitlines()[0]}"
                kept = [p for p in survivors if p[0] not in refused]
                fold, versions = _fold(kept), _versions(m for _, m in kept)
        if cityless:  # rare: a set of what this group took only then
            kept_here = {coordinates for coordinates, _ in kept}
            taken.update(c for c in cityless if c in kept_here)
    outcome.price_without_city = len(taken)
    by_coordinates = {(m.topic, m.partition, m.offset): m for m in raw
                      if (m.topic, m.partition, m.offset) in refused} if refused else {}
    outcome.dead_letters += [DeadLetter(*key, reason, by_coordinates[key].value) for key, reason in refused.items()]
    outcome.applied = len(applied)
    outcome.stale = len(batch) - len(applied | set(refused))
    return outcome


def send_dead_letters(kafka: KafkaResource, dead_letters: Sequence[DeadLetter], provenance: Provenance) -> None:
    """Set bad messages aside on the dead-letter topic, confirmed before the run succeeds (each with the
    simulated time its message carried, when that parsed)."""
    if not dead_letters:
        return
    sent = kafka.produce_confirmed(Outgoing(DEAD_LETTER_TOPIC, letter.to_json(), tag=letter.key,
                                            key=letter.key.encode(),
                                            headers=provenance.headers(DEAD_LETTER_SOURCE, letter.simulated_time))
                                   for letter in dead_letters)
    if sent.unconfirmed:
        raise DeadLettersNotDelivered(f"{sent.unconfirmed} dead letters were not confirmed by the broker: "
                                      f"{sent.errors[:3]}")


OffsetSpan = tuple[str, int, int, int]  # topic, partition, first offset, offset after the last

# Messages read and applied at once: what a run holds in memory at most, whatever its ranges' size.
APPLY_CHUNK = 50_000


def cut_spans(spans: Sequence[OffsetSpan], size: int) -> list[list[OffsetSpan]]:
    """The spans, in order, cut into groups of at most ``size`` messages (a span may be split)."""
    groups: list[list[OffsetSpan]] = []
    room = 0
    for topic, partition, start, end in spans:
        while start < end:
            if room == 0:
                groups.append([])
                room = size
            stop = min(end, start + room)
            groups[-1].append((topic, partition, start, stop))
            room -= stop - start
            start = stop
    return groups


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Reading and applying a range makes a few objects per message (read, parsed, folded), none of
    them in a reference cycle, so reference counting frees them all. Meanwhile the cyclic collector
    would scan the growing heap again and again: on 200,000 messages that doubled the parse time. It
    waits for the range instead (and is left as it was found)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def apply_catalogue_ranges(world: World, shop_databases: ShopDatabases, kafka: KafkaResource,
                           spans: Sequence[OffsetSpan], provenance: Provenance) -> ApplyOutcome:
    """Re-read exactly the messages at offsets [start, end) of each topic partition, apply them
    to every shop they concern, and set the bad ones aside. Up to ``APPLY_CHUNK`` messages go in one
    pass (the versions decide, not the order of the topics); a longer backlog goes chunk after chunk
    in offset order, so a run's memory stays bounded and one run, one process start, takes it all.
    After each chunk each shop's position moves past it (once its dead letters are confirmed: a
    chunk is applied when every message of it is in or set aside).

    A range starts where the shop furthest behind stands when that is before it: after a failed run,
    the next range's run (queued behind it) applies the failed run's messages too, so a position never
    passes a message its shop did not get (the live sensor sells once the shops caught up), on shops
    that had no position before the failed run too."""
    reading = _from_the_shops_positions(world, shop_databases, kafka, spans)
    outcome = ApplyOutcome()
    for chunk in cut_spans(reading, APPLY_CHUNK):
        with cyclic_gc_paused():
            raw = [message for topic, partition, start, end in chunk
                   for message in kafka.read_range(topic, partition, start, end)]
            applied = apply_catalogue_messages(world, shop_databases, raw)
        del raw  # before the next chunk is read: a run never holds two chunks' messages at once
        send_dead_letters(kafka, applied.dead_letters, provenance)
        ends: dict[tuple[str, int], int] = {}
        for topic, partition, _start, end in chunk:
            ends[topic, partition] = max(end, ends.get((topic, partition), 0))
        for shop in world.shops:
            with shop_databases.transaction(shop.shop_id) as conn:
                advance_catalogue_offsets(conn, ends)
        outcome.add(applied)
    outcome.read_from_behind = sum(s - r for (_, _, s, _), (_, _, r, _) in zip(spans, reading, strict=True))
    return outcome


def _from_the_shops_positions(world: World, shop_databases: ShopDatabases, kafka: KafkaResource,
                              spans: Sequence[OffsetSpan]) -> list[OffsetSpan]:
    """The spans, each partition's first one moved back to the lowest position a shop has on it when
    that is before it (never before what the broker still keeps). A shop with no position on a
    partition yet is recorded (committed) as standing at the run's first offset there: caught up to
    it, as ``catalogue_lag`` counts it, and behind the run's range should the run fail."""
    firsts: dict[tuple[str, int], int] = {}
    for topic, partition, start, _end in spans:
        firsts[topic, partition] = min(start, firsts.get((topic, partition), start))
    behind: dict[tuple[str, int], int] = {}
    for shop in world.shops:
        with shop_databases.transaction(shop.shop_id) as conn:
            claim_catalogue_offsets(conn, firsts)
            for key, offset in catalogue_offsets(conn).items():
                behind[key] = min(offset, behind.get(key, offset))
    lows: dict[tuple[str, int], tuple[int, int]] | None = None
    out = []
    for topic, partition, start, end in spans:
        position = behind.get((topic, partition))
        if position is not None and position < start == firsts[topic, partition]:
            lows = lows or kafka.topic_watermarks(sorted({t for t, *_ in spans}))
            start = max(position, lows.get((topic, partition), (position, 0))[0])
        out.append((topic, partition, start, end))
    return out


def catalogue_lag(world: World, shop_ids: Sequence[int], shop_databases: ShopDatabases,
                  kafka: KafkaResource) -> int:
    """Catalogue messages on Kafka that one of these shops has not applied yet (the most any shop
    lacks): a shop that sold ahead of them would charge an old price after a change took effect. A
    partition a shop has no position on yet (no upsert run reached it since positions were kept) counts
    as caught up: the catalogue sensor requests only what comes after its own cursor."""
    highs = kafka.topic_watermarks(CATALOGUE_TOPICS)
    lag = 0
    for shop_id in shop_ids:
        with shop_databases.transaction(shop_id) as conn:
            applied = catalogue_offsets(conn)
        lag = max(lag, sum(max(0, high - max(low, applied.get(key, high))) for key, (low, high) in highs.items()))
    return lag
