"""The shop's catalogue history (slowly changing dimension, type 2): every version of a category,
a product's descriptive fields and its city price, from the simulated time it took effect.

Versions are inserted, never updated: the same version twice is one row, a late one goes in at its
place, an older one never overwrites a newer. A shift sells at the versions in effect at each
receipt's time (``shelf_timeline``), so re-running a shift gives the same receipts whatever was
published afterwards. A version that arrives after shifts it would have changed were sold is
reported (``VersionsRecorded.shifts_touched``); those shifts keep their rows until re-materialized.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.orm import aliased

from rossmann_local.domain.catalogue import ProductRecord
from rossmann_local.domain.catalogue_fold import PRODUCT_FIELDS, Versioned
from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.simulation import ShelfProduct, ShelfTimeline
from rossmann_local.shop_db.cache import dialect_insert
from rossmann_local.shop_db.models import CategoryVersion, PriceVersion, ProductVersion, Shift
from rossmann_local.sqltypes import utc_bind_processor

CATEGORY_VERSION_FIELDS = ("name", "description", "is_deleted")


def placeholder_category_name(category_id: int) -> str:
    """The name a product's category has while none of its versions is in effect yet."""
    return f"category {category_id} (awaiting sync)"


@dataclass
class VersionsRecorded:
    added: int = 0  # new versions (the rest were known already)
    shifts_touched: set[datetime] = field(default_factory=set)  # sold shifts a late version falls into


Row = tuple[Any, ...]  # (key, valid_from_utc, *fields)


def _rows(versions: Iterable[Versioned], key: str, fields: Sequence[str]) -> list[Row]:
    """A row per version, as (key, time, *fields). The same version twice is one row all the same: the
    insert skips a (key, time) the history holds, from earlier in the batch too."""
    return list(map(attrgetter(key, "updated_at_utc", *fields), versions))


HISTORY_TABLES: tuple[tuple[Table, str, Sequence[str]], ...] = (
    (CategoryVersion.__table__, "category_id", CATEGORY_VERSION_FIELDS),
    (ProductVersion.__table__, "product_id", PRODUCT_FIELDS),
    (PriceVersion.__table__, "product_id", ("price", "discount")),
)


class VersionBatch:
    """A batch's versions (a Sync API answer, a range of Kafka messages) as history rows: made
    once, and inserted into every shop's database. Each shop takes the product versions meant for
    every shop, the prices of its city, and those of its city's ``city_products``: the product's
    fields that came with a price. The chain sends a price with the fields in effect at its time, a
    snapshot, not a description change: it is a product version only where it differs from the
    version the shop's history has in effect then (a description the shop has not had yet). Were it
    stored as it is, a description entered late for an earlier moment would be undone in the shop
    at the price's time, while the chain's catalogue has it in effect there."""

    def __init__(self, categories: Iterable[Versioned], products: Iterable[Versioned],
                 prices: dict[str, list[Versioned]],
                 city_products: dict[str, list[Versioned]] | None = None) -> None:
        self._rows: dict[tuple[str, str | None], list[Row]] = {
            (CategoryVersion.__table__.name, None): _rows(categories, *HISTORY_TABLES[0][1:]),
            (ProductVersion.__table__.name, None): _rows(products, *HISTORY_TABLES[1][1:])}
        self._rows |= {(ProductVersion.__table__.name, city): _rows(versions, *HISTORY_TABLES[1][1:])
                       for city, versions in (city_products or {}).items()}
        self._rows |= {(PriceVersion.__table__.name, city): _rows(versions, *HISTORY_TABLES[2][1:])
                       for city, versions in prices.items()}
        self._prepared: dict[tuple[str, str | None, str, tuple[int, ...] | None], tuple[str, list[Any]]] = {}

    def record(self, conn: Connection, city: str) -> VersionsRecorded:
        """Add the versions (prices: of ``city``) the shop's history does not have yet."""
        recorded = VersionsRecorded()
        for table, key, fields in HISTORY_TABLES:
            for part in self._parts(table, city):
                rows = self._rows.get(part, [])
                kept = None
                if table is ProductVersion.__table__ and part[1] is not None:  # snapshots: after the descriptions
                    kept = _differing(conn, table, key, fields, rows)
                    rows = [rows[i] for i in kept]
                late = _late(conn, table, key, fields, rows)
                recorded.added += self._insert(conn, table, key, fields, part, rows, kept)
                recorded.shifts_touched |= _touched(conn, table, key, late)
        return recorded

    @staticmethod
    def _parts(table: Table, city: str) -> list[tuple[str, str | None]]:
        """The batch's parts of ``table`` a shop of ``city`` takes: the every-shop one and its city's."""
        of_city = {CategoryVersion.__table__: [None], ProductVersion.__table__: [None, city],
                   PriceVersion.__table__: [city]}[table]
        return [(table.name, of) for of in of_city]

    def _insert(self, conn: Connection, table: Table, key: str, fields: Sequence[str],
                part: tuple[str, str | None], rows: list[Row], kept: list[int] | None = None) -> int:
        """INSERT ... ON CONFLICT DO NOTHING of the rows (those ``kept`` of the part, when it was
        filtered), through the driver with the values typed once per dialect by the columns' own bind
        processors; returns how many rows were added."""
        if not rows:
            return 0
        sql, parameters = self._prepared_part(conn, table, key, fields, part, rows, kept)
        # One executemany. Both drivers sum its rowcount, and a row the conflict skipped is not counted:
        # counting the table before and after cost a scan of the shop's whole history per batch.
        return int(conn.exec_driver_sql(sql, parameters).rowcount)

    def _prepared_part(self, conn: Connection, table: Table, key: str, fields: Sequence[str],
                       part: tuple[str, str | None], rows: list[Row],
                       kept: list[int] | None) -> tuple[str, list[Any]]:
        """The statement and typed parameters of one part (of the rows ``kept`` of it: the shops of a
        city mostly keep the same) for the dialect, made once per batch."""
        dialect = conn.dialect
        cache_key = (*part, dialect.name, None if kept is None else tuple(kept))
        prepared = self._prepared.get(cache_key)
        if prepared is None:
            # The dialect's own INSERT ... ON CONFLICT DO NOTHING and the batch's values, typed column by
            # column (map and zip run in C): made once per dialect, for every shop of the batch.
            columns = [key, "valid_from_utc", *fields]
            statement = dialect_insert(conn, table).on_conflict_do_nothing(index_elements=[key, "valid_from_utc"])
            compiled = statement.compile(dialect=dialect, column_keys=columns)
            values = {}
            for column, raw in zip(columns, zip(*rows, strict=True), strict=True):
                if column == "valid_from_utc":
                    values[column] = list(map(utc_bind_processor(dialect), raw))
                else:
                    processor = table.c[column].type.dialect_impl(dialect).bind_processor(dialect)
                    values[column] = list(map(processor, raw)) if processor else raw
            if compiled.positional:
                parameters = list(zip(*(values[name] for name in compiled.positiontup or ()), strict=True))
            else:
                parameters = [dict(zip(columns, row, strict=True)) for row in zip(*values.values(), strict=True)]
            prepared = self._prepared[cache_key] = (str(compiled), parameters)
        return prepared


_NO_KEY = object()


def _differing(conn: Connection, table: Table, key: str, fields: Sequence[str], rows: list[Row]) -> list[int]:
    """The indexes of the rows whose fields differ from the version in effect at their time, in the
    shop's history or an earlier row kept (a row at a time the history has is left out: its place is
    taken). One query: each key's version in effect at the rows' earliest time, and every later one."""
    if not rows:
        return []
    first = min(row[1] for row in rows)
    keys = {row[0] for row in rows}
    earlier = aliased(table)
    since = (select(func.max(earlier.c.valid_from_utc))
             .where(earlier.c[key] == table.c[key], earlier.c.valid_from_utc <= first).scalar_subquery())
    known: dict[Any, list[tuple[datetime, Row]]] = {}
    for version in conn.execute(select(table.c[key], table.c.valid_from_utc, *(table.c[f] for f in fields))
                                .where(table.c[key].in_(keys),
                                       (table.c.valid_from_utc > first) | (table.c.valid_from_utc == since))):
        known.setdefault(version[0], []).append((version[1], tuple(version)[2:]))
    kept = []
    by_key_and_time = list(map(itemgetter(0, 1), rows))
    key_now: Any = _NO_KEY
    for i in sorted(range(len(rows)), key=by_key_and_time.__getitem__):  # stable: the first of a time wins
        row = rows[i]
        k, at = row[0], row[1]
        if k != key_now:  # the key's rows follow in time order: its history, oldest last, popped as time passes
            key_now, versions, in_effect, placed = k, sorted(known.get(k, ()), reverse=True), None, None
        while versions and versions[-1][0] < at:
            in_effect = versions.pop()[1]
        if at == placed or (versions and versions[-1][0] == at):
            continue  # the history, or a row kept before, holds this time already
        if (values := row[2:]) != in_effect:
            kept.append(i)
            in_effect, placed = values, at
    return sorted(kept)


def _late(conn: Connection, table: Table, key: str, fields: Sequence[str],
          rows: list[Row]) -> list[tuple[int, datetime]]:
    """The versions, not known yet, that take effect before the end of a shift already sold and change
    what was in effect then (a product message repeating a description while changing a price is no
    new product version for a sold shift). Most batches have none (all later than anything sold), and
    cost one query."""
    last_sold = conn.scalar(select(func.max(Shift.shift_end)).where(Shift.sales_recorded_at_utc.is_not(None)))
    if last_sold is None:
        return []
    late = []
    for row in rows:
        k, at = row[0], row[1]
        if at >= last_sold or conn.scalar(select(func.count()).select_from(table).where(
                table.c[key] == k, table.c.valid_from_utc == at)):
            continue
        before = conn.execute(select(*(table.c[f] for f in fields))
                              .where(table.c[key] == k, table.c.valid_from_utc < at)
                              .order_by(table.c.valid_from_utc.desc()).limit(1)).first()
        if before is None or tuple(before) != row[2:]:
            late.append((k, at))
    return late


def _touched(conn: Connection, table: Table, key: str, late: list[tuple[int, datetime]]) -> set[datetime]:
    """Sold shifts during which one of the late versions is in effect (before the key's next one)."""
    touched: set[datetime] = set()
    for k, at in late:
        until = conn.scalar(select(func.min(table.c.valid_from_utc)).where(table.c[key] == k,
                                                                            table.c.valid_from_utc > at))
        window = [Shift.sales_recorded_at_utc.is_not(None), Shift.shift_end > at]
        if until is not None:
            window.append(Shift.shift_start < until)
        touched.update(conn.scalars(select(Shift.shift_start).where(*window)))
    return touched


def record_synced(conn: Connection, city: str, categories: Sequence[Versioned],
                  products: Sequence[ProductRecord]) -> VersionsRecorded:
    """A Sync API answer into the shop's history. Its product records come at every moment the
    product or its city price changed, each with the price in effect then; a price version is
    recorded only where the price or discount changed. A record made when only the description
    changed would otherwise claim the price at that moment with the value the Sync API knew then,
    and a price change the chain entered late for that same moment would find its place taken. A
    record at a price change carries the product's fields as a price message does, and is a product
    version only where they differ from those in effect then (``VersionBatch``)."""
    prices = _price_changes(conn, products)
    at_price_changes = {(r.product_id, r.updated_at_utc) for r in prices}
    descriptions = [r for r in products if (r.product_id, r.updated_at_utc) not in at_price_changes]
    return VersionBatch(categories, descriptions, {city: prices}, city_products={city: prices}).record(conn, city)


def _price_changes(conn: Connection, records: Sequence[ProductRecord]) -> list[ProductRecord]:
    """The records whose price or discount differs from the one in effect just before them (in the
    shop's history, or an earlier record of the batch)."""
    by_product: dict[int, list[ProductRecord]] = {}
    for record in records:
        by_product.setdefault(record.product_id, []).append(record)
    changes = []
    for product_id, versions in by_product.items():
        versions.sort(key=lambda r: r.updated_at_utc)
        before = conn.execute(select(PriceVersion.price, PriceVersion.discount).where(
            PriceVersion.product_id == product_id, PriceVersion.valid_from_utc < versions[0].updated_at_utc)
            .order_by(PriceVersion.valid_from_utc.desc()).limit(1)).first()
        previous = (before.price, before.discount) if before is not None else None
        for record in versions:
            if (record.price, record.discount) != previous:
                changes.append(record)
            previous = (record.price, record.discount)
    return changes


def record_versions(conn: Connection, city: str, categories: Iterable[Versioned] = (),
                    products: Iterable[Versioned] = (), prices: Iterable[Versioned] = ()) -> VersionsRecorded:
    """Add category, product and price versions (of the shop's ``city``) to one shop's history."""
    return VersionBatch(categories, products, {city: list(prices)}).record(conn, city)


def _in_effect(table: Table, key: str, moment: datetime) -> Any:
    """Each key's version in effect at ``moment``: its latest from at or before it."""
    latest = (select(table.c[key].label("key"), func.max(table.c.valid_from_utc).label("since"))
              .where(table.c.valid_from_utc <= moment).group_by(table.c[key]).subquery())
    return select(table).join(latest, (table.c[key] == latest.c.key) & (table.c.valid_from_utc == latest.c.since))


def shelf_at(conn: Connection, moment: datetime) -> list[ShelfProduct]:
    """The products on sale at ``moment`` by the history: not deleted, priced, with their category's
    name then."""
    categories = {r.category_id: r.name for r in conn.execute(_in_effect(CategoryVersion.__table__, "category_id",
                                                                         moment))}
    prices = {r.product_id: r for r in conn.execute(_in_effect(PriceVersion.__table__, "product_id", moment))}
    shelf = []
    for p in conn.execute(_in_effect(ProductVersion.__table__, "product_id", moment)):
        priced = prices.get(p.product_id)
        if p.is_deleted or priced is None:
            continue
        shelf.append(ShelfProduct(product_id=p.product_id, name=p.name, barcode=p.barcode, category_id=p.category_id,
                                  category_name=categories.get(p.category_id,
                                                               placeholder_category_name(p.category_id)),
                                  price=priced.price, discount=priced.discount))
    return sorted(shelf, key=lambda p: p.product_id)


def shelf_timeline(conn: Connection, shift: ShiftWindow) -> ShelfTimeline:
    """The shelf at the shift's start and at every moment within it when a version takes effect."""
    moments: set[datetime] = set()
    for table in (CategoryVersion, ProductVersion, PriceVersion):
        moments.update(conn.scalars(select(table.valid_from_utc).distinct().where(
            table.valid_from_utc > shift.start, table.valid_from_utc < shift.end)))
    return ShelfTimeline(tuple((at, tuple(shelf_at(conn, at))) for at in [shift.start, *sorted(moments)]))
