"""The versioned, set-based upsert of the catalogue cache (categories, products).

One statement per batch: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE incoming is newer``, so an
older message never overwrites a newer row (docs/contracts.md defect 2), whatever topic or sync it came
from. A batch is folded to one version per key first (``domain.catalogue_fold``): one statement
must not touch a row twice. Products carry two versions: ``updated_at_utc`` for the descriptive fields and
``price_updated_at_utc`` for the city's price and discount, which arrive on other topics in no
guaranteed order; each group changes only when its own incoming version is newer. Local stock is
never in the SET list. A product whose category has not arrived yet gets a placeholder category
(older than any real one, so the real row replaces it) instead of failing the foreign key and
being lost (defect 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, case, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from rossmann_local.domain.catalogue_fold import (
    PRODUCT_FIELDS,
    CatalogueFold,
    ProductChange,
    Versioned,
)
from rossmann_local.shop_db.models import CatalogueOffset, Category, Product, SyncState

# Older than any real change: placeholder categories, and the price version of an unpriced product.
PLACEHOLDER_UPDATED_AT = datetime(1970, 1, 1, tzinfo=UTC)
PRICE_FIELDS = ("price", "discount")


@dataclass(frozen=True)
class UpsertCounts:
    received: int
    applied: int
    placeholders: int = 0
    changed_ids: frozenset[int] = frozenset()

    @property
    def stale(self) -> int:
        """Rows not applied because the cache already held the same or a newer version."""
        return self.received - self.applied


def dialect_insert(conn: Connection, table: Table) -> Any:
    """The backend's INSERT, which knows ON CONFLICT (SQLite and Postgres spell it the same)."""
    dialects = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
    try:
        return dialects[conn.dialect.name](table)
    except KeyError:
        raise NotImplementedError(f"shop databases run on SQLite or Postgres, not {conn.dialect.name}") from None


def _versioned_upsert(conn: Connection, table: Table, key: str, groups: dict[str, Sequence[str]],
                      rows: list[dict[str, Any]]) -> frozenset[int]:
    """Upsert ``rows``; each group of columns (keyed by its version column) changes only where the
    incoming version is newer. Returns the keys of the rows that changed."""
    if not rows:
        return frozenset()
    stmt = dialect_insert(conn, table)
    incoming, current = stmt.excluded, table.c
    set_: dict[str, Any] = {}
    newer = []
    for version, columns in groups.items():
        is_newer = incoming[version] > current[version]
        newer.append(is_newer)
        set_.update({c: case((is_newer, incoming[c]), else_=current[c]) for c in (*columns, version)})
    stmt = stmt.on_conflict_do_update(index_elements=[key], set_=set_, where=or_(*newer)).returning(current[key])
    return frozenset(conn.execute(stmt, rows).scalars())


def upsert_categories(conn: Connection, categories: Sequence[Versioned]) -> UpsertCounts:
    """Categories from the Sync API or from Kafka messages (the same fields), newest per id."""
    fold: CatalogueFold[None] = CatalogueFold.of_synced(categories, [], city="")
    rows = fold.category_rows()
    groups = {"updated_at_utc": ["name", "description", "is_deleted"]}
    changed = _versioned_upsert(conn, Category.__table__, "category_id", groups, rows)
    return UpsertCounts(received=len(categories), applied=len(changed), changed_ids=changed)


def ensure_categories_exist(conn: Connection, category_ids: Iterable[int]) -> int:
    """Insert a placeholder for each category not in the cache yet; returns how many were needed."""
    rows = [
        {"category_id": cid, "name": f"category {cid} (awaiting sync)", "description": None,
         "is_deleted": False, "updated_at_utc": PLACEHOLDER_UPDATED_AT}
        for cid in sorted(set(category_ids))
    ]
    if not rows:
        return 0
    stmt = dialect_insert(conn, Category.__table__).on_conflict_do_nothing(index_elements=["category_id"])
    return len(conn.execute(stmt.returning(Category.category_id), rows).all())


def upsert_product_changes(conn: Connection, changes: Sequence[ProductChange],
                           received: int | None = None) -> UpsertCounts:
    """One folded change per product (``CatalogueFold.product_changes_for``); each column group
    changes only where its own version is newer. An unpriced change keeps the row's price."""
    if len({c.product_id for c in changes}) != len(changes):
        raise ValueError("fold the changes first: one statement must not touch a product twice")
    rows = [{**asdict(c), "price_updated_at_utc": c.price_updated_at_utc or PLACEHOLDER_UPDATED_AT} for c in changes]
    placeholders = ensure_categories_exist(conn, (r["category_id"] for r in rows))
    groups = {"updated_at_utc": PRODUCT_FIELDS, "price_updated_at_utc": PRICE_FIELDS}
    changed = _versioned_upsert(conn, Product.__table__, "product_id", groups, rows)
    return UpsertCounts(received=len(changes) if received is None else received, applied=len(changed),
                        placeholders=placeholders, changed_ids=changed)


def upsert_products(conn: Connection, records: Sequence[Versioned], city: str) -> UpsertCounts:
    """Products from the Sync API, each priced for the shop's ``city``."""
    changes = CatalogueFold.of_synced([], records, city).product_changes_for(city)
    return upsert_product_changes(conn, changes, received=len(records))


def sync_watermark(conn: Connection, entity: str) -> datetime | None:
    return conn.scalar(select(SyncState.watermark_utc).where(SyncState.entity == entity))


def advance_sync_watermark(conn: Connection, entity: str, watermark: datetime, now: datetime) -> None:
    """Record the newest upstream time seen; never moves backwards."""
    stmt = dialect_insert(conn, SyncState.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["entity"],
        set_={
            "watermark_utc": stmt.excluded.watermark_utc,
            "last_synced_at_utc": stmt.excluded.last_synced_at_utc,
        },
        where=stmt.excluded.watermark_utc >= SyncState.__table__.c.watermark_utc,
    )
    conn.execute(stmt, {"entity": entity, "watermark_utc": watermark, "last_synced_at_utc": now})


def advance_catalogue_offsets(conn: Connection, ends: dict[tuple[str, int], int]) -> None:
    """Record that the shop has applied each topic partition up to (not including) its offset; a
    position never moves back (a range applied again changes nothing)."""
    if not ends:
        return
    table = CatalogueOffset.__table__
    stmt = dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["topic", "topic_partition"],
        set_={"next_offset": case((stmt.excluded.next_offset > table.c.next_offset, stmt.excluded.next_offset),
                                  else_=table.c.next_offset)})
    conn.execute(stmt, [{"topic": t, "topic_partition": p, "next_offset": o} for (t, p), o in sorted(ends.items())])


def claim_catalogue_offsets(conn: Connection, starts: dict[tuple[str, int], int]) -> None:
    """Record, for each topic partition the shop has no position on yet, that it stands at ``starts``:
    a run writes this before it applies its ranges, so when it fails a shop that never had an upsert
    run still stands before them, and the next range's run reads them again (``advance`` moves it on)."""
    if not starts:
        return
    stmt = dialect_insert(conn, CatalogueOffset.__table__).on_conflict_do_nothing(
        index_elements=["topic", "topic_partition"])
    conn.execute(stmt, [{"topic": t, "topic_partition": p, "next_offset": o} for (t, p), o in sorted(starts.items())])


def catalogue_offsets(conn: Connection) -> dict[tuple[str, int], int]:
    """The shop's position on each catalogue topic partition it has applied."""
    rows = conn.execute(select(CatalogueOffset.topic, CatalogueOffset.topic_partition, CatalogueOffset.next_offset))
    return {(topic, partition): offset for topic, partition, offset in rows.tuples()}
