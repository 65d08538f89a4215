"""The shop database's migrations: a database made by the previous release (0.1.0, no migrations)
is upgraded at shop start and keeps every row; the revisions build exactly the models' schema."""

from __future__ import annotations

import gzip
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url

from rossmann_local.domain.world import World
from rossmann_local.reports import schema
from rossmann_local.resources.clickhouse import ClickHouseReports, open_client
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import ConfigError
from rossmann_local.shop_db import migrations
from rossmann_local.shop_db.models import ShopBase, Transaction
from rossmann_local_tests.helpers import materialize_shift, receipts_of, shift_of

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"


def load_release_database(shops: ShopDatabases, shop_id: int, drop: tuple[str, ...] = ()) -> None:
    """Shop ``shop_id``'s database as release 0.1.0 left it (see fixtures/release-0.1.0/README.md),
    written with the database's own client, not through the project's engine."""
    url = make_url(shops.url(shop_id))
    if url.get_backend_name() == "sqlite":
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(url.database or "") as conn:
            conn.executescript(gzip.decompress((RELEASE / "shop_1.sqlite.sql.gz").read_bytes()).decode())
            for table in drop:
                conn.execute(f"DROP TABLE {table}")
    else:
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(gzip.decompress((RELEASE / "shop_1.postgres.sql.gz").read_bytes()).decode())
            for table in drop:
                conn.execute(f"DROP TABLE public.{table}")


def every_row(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the database has (a release's database lacks the later tables)."""
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        return {table.name: [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]
                for table in ShopBase.metadata.sorted_tables if table.name in present}


def test_a_shop_database_made_by_release_0_1_0_is_upgraded_at_shop_start_and_keeps_every_row(
        shop_databases: ShopDatabases, sync_api: SyncApiClient, world: World) -> None:
    load_release_database(shop_databases, 1)
    raw = create_engine(shop_databases.url(1))  # as the release left it, before any upgrade
    assert migrations.current(raw) is None, "the release had no migrations"
    before = every_row(raw)
    raw.dispose()
    assert len(before["transactions"]) == 403 and len(before["transaction_items"]) == 1162

    engine = shop_databases.engine(1)  # shop start: the upgrade runs here
    assert migrations.current(engine) == migrations.head()
    after = every_row(engine)
    assert {name: rows for name, rows in after.items() if name in before} == before
    assert all(not after[name] for name in set(after) - set(before)), "the later tables start empty"

    # and the shop goes on: the next day's first shift sells on the upgraded database
    kept = receipts_of(shop_databases, 1)
    result = materialize_shift(world, shift_of(world, world.start_date + timedelta(days=1)), 1,
                               {"shop_databases": shop_databases, "sync_api": sync_api})
    assert result.success
    with shop_databases.transaction(1) as conn:
        assert conn.scalar(select(func.count()).select_from(Transaction)) > len(before["transactions"])
    assert set(kept) <= set(receipts_of(shop_databases, 1))


def test_a_database_older_still_gets_the_tables_it_lacks(sqlite_shops: ShopDatabases) -> None:
    """Before 0.1.0 there was no stock_message_offsets table: the baseline adds it and touches the rest."""
    load_release_database(sqlite_shops, 1, drop=("stock_message_offsets",))
    engine = sqlite_shops.engine(1)
    assert inspect(engine).has_table("stock_message_offsets")
    assert len(every_row(engine)["transactions"]) == 403


def test_the_revisions_build_exactly_the_models_schema(shop_databases: ShopDatabases) -> None:
    """A change to shop_db/models.py without a revision fails here, naming the difference."""
    engine = shop_databases.engine(1)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                       ShopBase.metadata)
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == migrations.head()
    assert differences == [], f"the models differ from the migrations; add a revision: {differences}"
    if engine.dialect.name == "sqlite":  # a table option compare_metadata does not look at
        with engine.connect() as conn:
            layouts = {name: sql for name, sql in conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table'"))}
        history = {"category_versions", "product_versions", "price_versions"}
        assert {name for name, sql in layouts.items() if "WITHOUT ROWID" in sql} == history


def test_opening_again_runs_nothing(sqlite_shops: ShopDatabases) -> None:
    engine = sqlite_shops.engine(1)
    assert migrations.upgrade(engine) is False


def test_clickhouse_tables_of_an_older_version_are_refused_by_name_until_a_schema_change_upgrades_them(
        clickhouse: ClickHouseReports, monkeypatch: pytest.MonkeyPatch) -> None:
    """An older transactions table (without item_id, say) is named at open, not written into
    wrongly; the explicit, idempotent statement in SCHEMA_CHANGES upgrades it, keeping its rows."""
    dsn = clickhouse.resolved_dsn()
    older = [(name, kind) for name, kind in schema.TRANSACTIONS_COLUMNS if name != "item_id"]
    raw = clickhouse_connect.get_client(dsn=dsn)
    raw.command(f"CREATE DATABASE IF NOT EXISTS {schema.DATABASE}")
    raw.command(f"CREATE TABLE {schema.DATABASE}.{schema.TRANSACTIONS} "
                f"({', '.join(f'{n} {k}' for n, k in older)}) ENGINE = MergeTree ORDER BY (shop_id, shift_start)")
    raw.command(f"INSERT INTO {schema.DATABASE}.{schema.TRANSACTIONS} (shop_id, transaction_id, quantity) "
                "VALUES (1, 7, 3)")
    raw.close()
    with pytest.raises(ConfigError, match=r"shop_reports.transactions lacks column item_id UInt64.*SCHEMA_CHANGES"):
        open_client(dsn)

    add_item_id = f"ALTER TABLE {schema.DATABASE}.{schema.TRANSACTIONS} ADD COLUMN IF NOT EXISTS item_id UInt64"
    monkeypatch.setattr(schema, "SCHEMA_CHANGES", (add_item_id,))
    for _ in range(2):  # idempotent: a second open changes nothing
        client = open_client(dsn)
        rows = client.query(f"SELECT shop_id, transaction_id, quantity, item_id FROM "
                            f"{schema.DATABASE}.{schema.TRANSACTIONS}").result_rows
        client.close()
        assert rows == [(1, 7, 3, 0)]
