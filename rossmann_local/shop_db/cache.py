"""The versioned, set-based upsert of the catalogue cache (categories, products).

One statement per batch: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE excluded.updated_at_utc >
current.updated_at_utc``, so an older message never overwrites a newer row (DOMAIN.md defect 2),
whatever topic or sync it came from. Local stock is never in the SET list. A product whose
category has not arrived yet gets a placeholder category (older than any real one, so the real
row replaces it) instead of failing the foreign key and being lost (defect 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from rossmann_local.domain.catalogue import CategoryRecord, ProductRecord
from rossmann_local.shop_db.models import Category, Product, SyncState

PLACEHOLDER_UPDATED_AT = datetime(1970, 1, 1, tzinfo=UTC)
CATEGORY_COLUMNS = ("category_id", "name", "description", "is_deleted", "updated_at_utc")
PRODUCT_COLUMNS = ("product_id", "category_id", "name", "description", "barcode", "price", "discount",
                   "is_deleted", "updated_at_utc")


@dataclass(frozen=True)
class UpsertCounts:
    received: int
    applied: int
    placeholders: int = 0

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


def _newest_per_key(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One row per key (the newest): one statement must not touch a row twice (Postgres refuses)."""
    newest: dict[int, dict[str, Any]] = {}
    for row in rows:
        current = newest.get(row[key])
        if current is None or row["updated_at_utc"] > current["updated_at_utc"]:
            newest[row[key]] = row
    return list(newest.values())


def _versioned_upsert(conn: Connection, table: Table, key: str, columns: Sequence[str],
                      rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    stmt = dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[key],
        set_={c: stmt.excluded[c] for c in columns if c != key},
        where=stmt.excluded.updated_at_utc > table.c.updated_at_utc,
    ).returning(table.c[key])
    return len(conn.execute(stmt, rows).all())


def upsert_categories(conn: Connection, records: Sequence[CategoryRecord]) -> UpsertCounts:
    rows = _newest_per_key((r.model_dump(include=set(CATEGORY_COLUMNS)) for r in records), "category_id")
    applied = _versioned_upsert(conn, Category.__table__, "category_id", CATEGORY_COLUMNS, rows)
    return UpsertCounts(received=len(records), applied=applied)


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


def upsert_products(conn: Connection, records: Sequence[ProductRecord]) -> UpsertCounts:
    rows = _newest_per_key((r.model_dump(include=set(PRODUCT_COLUMNS)) for r in records), "product_id")
    placeholders = ensure_categories_exist(conn, (r["category_id"] for r in rows))
    applied = _versioned_upsert(conn, Product.__table__, "product_id", PRODUCT_COLUMNS, rows)
    return UpsertCounts(received=len(records), applied=applied, placeholders=placeholders)


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
