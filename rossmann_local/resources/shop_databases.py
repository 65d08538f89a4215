"""One OLTP database per shop: Postgres from a URL template, or a SQLite file per shop by default."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SAWarning

from rossmann_local.resources import resolved
from rossmann_local.settings import SHOP_DB_URL, ConfigError, data_dir
from rossmann_local.shop_db import migrations


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def shop_database_url(shop_id: int, url_template: str | None, sqlite_dir: Path) -> str:
    """The shop's database URL: the template with ``{shop_id}`` filled in, else a SQLite file."""
    if not url_template:
        return f"sqlite:///{sqlite_dir / f'shop_{shop_id}.sqlite'}"
    if "{shop_id}" not in url_template:
        raise ConfigError(f"{SHOP_DB_URL} must contain {{shop_id}} so each shop gets its own database")
    try:
        url = url_template.format(shop_id=shop_id)
        make_url(url)
    except (KeyError, IndexError, ValueError, ArgumentError) as exc:
        raise ConfigError(f"{SHOP_DB_URL} is not a valid database URL template ({exc})") from None
    return url


def open_shop_engine(url: str) -> Engine:
    """An engine on a shop database at the models' schema: created on first use, upgraded by the
    migrations (keeping every row) when an older release made it."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"{SHOP_DB_URL}: cannot open {make_url(url).render_as_string(hide_password=True)}: "
                          f"{exc}") from None
    if engine.dialect.name == "sqlite":
        Path(engine.url.database or "").parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name != "postgresql":
        raise ConfigError(f"{SHOP_DB_URL}: shop databases run on SQLite or Postgres, not {engine.dialect.name}")
    try:
        migrations.upgrade(engine)
    except DBAPIError as exc:
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        raise ConfigError(f"shop database {where} is not reachable (check {SHOP_DB_URL}): "
                          f"{exc.orig.__class__.__name__}: {str(exc.orig).strip().splitlines()[0]}") from None
    return engine


# SQLite keeps NUMERIC as text-backed decimals through SQLAlchemy's converter; the values are exact.
warnings.filterwarnings("ignore", message=r".*does \*not\* support Decimal objects natively.*", category=SAWarning)


class ShopDatabases(dg.ConfigurableResource):
    """The shops' databases. ``url_template`` (``ROSSMANN_SHOP_DB_URL``) holds ``{shop_id}``,
    e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/shop_{shop_id}``; unset, each shop is a
    SQLite file under ``sqlite_dir`` (default ``ROSSMANN_DATA_DIR``/shops)."""

    url_template: str | None = None
    sqlite_dir: str | None = None

    _engines: dict[int, Engine] = PrivateAttr(default_factory=dict)

    def url(self, shop_id: int) -> str:
        sqlite_dir = Path(self.sqlite_dir) if self.sqlite_dir else data_dir() / "shops"
        return shop_database_url(shop_id, resolved(self.url_template), sqlite_dir)

    def engine(self, shop_id: int) -> Engine:
        if shop_id not in self._engines:
            self._engines[shop_id] = open_shop_engine(self.url(shop_id))
        return self._engines[shop_id]

    @contextmanager
    def transaction(self, shop_id: int) -> Iterator[Connection]:
        """One unit of work on the shop's database: all of it commits, or none of it."""
        with self.engine(shop_id).begin() as conn:
            yield conn

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.dispose()


def shop_databases_from_env() -> ShopDatabases:
    """The resource as the environment configures it; the URL stays an EnvVar so it never shows in the UI."""
    template = dg.EnvVar(SHOP_DB_URL) if os.environ.get(SHOP_DB_URL) else None
    return ShopDatabases(url_template=template)
