"""The shop-database resource: one database per shop, and settings errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from rossmann_local.defs import default_resources
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import ConfigError

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
