"""The shop-database resource: one database per shop, and settings errors that name the setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Dialect, insert, inspect
from sqlalchemy.dialects import postgresql, sqlite

from rossmann_local.defs import default_resources
from rossmann_local.domain.catalogue import CategoryRecord, ProductRecord
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.simulation import configured_shelf, simulate_terminal_sales
from rossmann_local.domain.world import World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import ConfigError
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.cache import upsert_categories, upsert_products
from rossmann_local.shop_db.models import Transaction, TransactionItem
from rossmann_local.sqltypes import UtcDateTime, utc_bind_processor

CATALOGUE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def catalogue(world: World, city: str) -> list[ProductRecord]:
    return [ProductRecord(product_id=p.product_id, name=p.name, barcode=p.barcode, category_id=p.category_id,
                          price=p.prices[city].price, discount=p.prices[city].discount, updated_at_utc=CATALOGUE_TIME)
            for p in world.products]

DOMAIN_TABLES = {"categories", "products", "transactions", "transaction_items"}


def test_each_shop_gets_its_own_database_with_the_schema_created(shop_databases: ShopDatabases) -> None:
    urls = {shop_databases.url(shop_id) for shop_id in (1, 2)}
    assert len(urls) == 2
    for shop_id in (1, 2):
        tables = set(inspect(shop_databases.engine(shop_id)).get_table_names())
        assert DOMAIN_TABLES | {"deliveries", "delivery_items", "sync_state", "shifts"} <= tables


def test_sqlite_files_live_under_the_data_dir_by_default(tmp_path: Path) -> None:
    shops = default_resources()["shop_databases"]
    assert shops.url(3) == f"sqlite:///{tmp_path / 'data' / 'shops' / 'shop_3.sqlite'}"


@pytest.mark.parametrize(("template", "problem"), [
    ("postgresql+psycopg://postgres@127.0.0.1/shops", "must contain {shop_id}"),
    ("postgresql+psycopg://postgres@127.0.0.1/shop_{shop_id}_{city}", "not a valid database URL template"),
    ("not a url {shop_id}", "not a valid database URL template"),
    ("mysql://root@127.0.0.1/shop_{shop_id}", "ROSSMANN_SHOP_DB_URL"),
])
def test_a_bad_url_template_names_the_setting(template: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"ROSSMANN_SHOP_DB_URL") as error:
        ShopDatabases(url_template=template).engine(1)
    assert problem in str(error.value)


def test_an_unreachable_postgres_names_the_setting_not_a_driver_trace() -> None:
    shops = ShopDatabases(url_template="postgresql+psycopg://postgres@127.0.0.1:9/shop_{shop_id}")
    with pytest.raises(ConfigError, match=r"shop database postgresql\+psycopg://postgres@127.0.0.1:9/shop_1 is not "
                                          r"reachable \(check ROSSMANN_SHOP_DB_URL\)"):
        shops.engine(1)


def test_the_password_in_the_url_never_shows_in_errors() -> None:
    shops = ShopDatabases(url_template="postgresql+psycopg://postgres:s3cret@127.0.0.1:9/shop_{shop_id}")
    with pytest.raises(ConfigError) as error:
        shops.engine(1)
    assert "s3cret" not in str(error.value)


def test_the_url_comes_from_the_environment_as_an_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSSMANN_SHOP_DB_URL", "postgresql+psycopg://postgres:pw@db/shop_{shop_id}")
    shops = default_resources()["shop_databases"]
    assert "pw@" not in repr(shops), "the URL stays an EnvVar in the definitions, resolved only in runs"


@pytest.mark.services  # starts a PostgreSQL server
def test_a_throwaway_postgres_starts_takes_databases_and_leaves_nothing_behind() -> None:
    """What the test session falls back to on a machine with no Postgres (conftest.pg_admin_url)."""
    from sqlalchemy import create_engine, text

    from rossmann_local_tests.throwaway_postgres import ThrowawayPostgres, answers

    server = ThrowawayPostgres()
    try:
        url = server.start()
        assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:") and answers(url)
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE throwaway_shop_1"))
        admin.dispose()
        shops = ShopDatabases(url_template=url.rsplit("/", 1)[0] + "/throwaway_shop_{shop_id}")
        with shops.transaction(1) as conn:
            assert conn.execute(text("SELECT count(*) FROM products")).scalar() == 0
        shops.dispose()
    finally:
        server.stop()
    assert not server.base.exists() and not answers(url)



def test_receipts_written_in_bulk_are_stored_exactly_as_an_insert_stores_them(world: World,
                                                                              shop_databases: ShopDatabases) -> None:
    """The ledger's bulk writer (SQLite's executemany, Postgres's COPY) binds each value as SQLAlchemy
    would: the same receipts written by it into shop 1 and by a plain INSERT into shop 2 are stored
    alike, value for value (a time stored in another text format would compare wrongly in SQL)."""
    shop = world.shop(1)
    shift = shifts_of_day(world, world.start_date)[0]
    shelf = configured_shelf(world, shop.city)
    receipts = simulate_terminal_sales(world, shop, shift, shelf, {p.product_id: 50 for p in shelf}, []).receipts
    rows = {Transaction.__table__: [{"shift_start": shift.start, **{c: getattr(r, c) for c in ledger.RECEIPT_COLUMNS}}
                                    for r in receipts],
            TransactionItem.__table__: [{"transaction_id": r.transaction_id,
                                         **{c: getattr(line, c) for c in ledger.LINE_COLUMNS}}
                                        for r in receipts for line in r.lines]}
    stored = []
    for shop_id, write in ((1, lambda conn: ledger.insert_receipts(conn, shift, receipts)),
                           (2, lambda conn: [conn.execute(insert(table), values) for table, values in rows.items()])):
        with shop_databases.transaction(shop_id) as conn:
            upsert_categories(conn, [CategoryRecord(category_id=c.category_id, name=c.name, description=None,
                                                    updated_at_utc=CATALOGUE_TIME) for c in world.categories])
            upsert_products(conn, catalogue(world, shop.city), shop.city)
            write(conn)
            stored.append([conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1").all()
                           for table in ("transactions", "transaction_items")])
    assert len(stored[0][0]) == len(receipts) > 100
    assert len(stored[0][1]) == sum(len(r.lines) for r in receipts)
    assert stored[0] == stored[1]
    with shop_databases.transaction(1) as conn:  # and SQL compares them as times
        assert ledger.shift_receipt_count(conn, shift) == len(receipts)
        assert len(ledger.stock_movements(conn, shift.start, shift.end)) == len(stored[0][1])


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgres"])
def test_bulk_time_typing_gives_what_the_column_type_gives(dialect: Dialect) -> None:
    """The history's bulk insert types its times with ``utc_bind_processor`` (on SQLite a faster
    route to the same text): every instant, from any zone, as the column type binds it, and a naive
    time refused alike."""
    column_type = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert column_type is not None
    fast = utc_bind_processor(dialect)
    parsed = ProductRecord.model_validate_json(
        b'{"product_id": 1, "name": "n", "barcode": "123456789012", "category_id": 1, "price": 1, "discount": 0,'
        b' "updated_at_utc": "2026-06-01T07:30:00.000001+02:00"}').updated_at_utc  # held in UTC from the edge on
    west, india = timezone(timedelta(hours=-2)), timezone(timedelta(hours=5, minutes=30))
    berlin = ZoneInfo("Europe/Berlin")
    moments = [parsed, datetime(1, 1, 1, 3, tzinfo=west), datetime(9999, 12, 31, tzinfo=UTC),
               datetime(2026, 3, 29, 1, 59, 59, 999_999, tzinfo=berlin), datetime(2026, 12, 1, 0, 0, 0, 5, tzinfo=UTC),
               datetime(2026, 12, 1, tzinfo=india), datetime(2026, 6, 1, 7, 30, tzinfo=UTC)]
    assert [fast(m) for m in moments] == [column_type(m) for m in moments]
    assert fast(parsed) == (datetime(2026, 6, 1, 5, 30, 0, 1) if dialect.name != "sqlite"
                            else "2026-06-01 05:30:00.000001")
    for typing in (fast, column_type):
        with pytest.raises(ValueError, match="naive datetime"):
            typing(datetime(2026, 6, 1))


SQLITE_TIME = UtcDateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
FAST_SQLITE_TIME = utc_bind_processor(sqlite.dialect())


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(minutes=330))])))
def test_the_sqlite_time_text_is_sqlalchemys_for_any_instant(moment: datetime) -> None:
    """The SQLite text of a time is put together from digits, not formatted (a history insert types a
    time per row): any instant, whatever its zone, gives SQLAlchemy's own characters."""
    assert FAST_SQLITE_TIME is not SQLITE_TIME
    assert FAST_SQLITE_TIME(moment) == SQLITE_TIME(moment)
    assert FAST_SQLITE_TIME(moment.astimezone(UTC)) == SQLITE_TIME(moment)
