"""The shop database's schema, versioned with Alembic: ``upgrade`` brings any shop database to the
models' schema at shop start, keeping every row.

A database made before migrations existed (no ``alembic_version`` table, release 0.1.0 and older)
is taken up by the baseline revision, which creates only the tables it lacks. Each later change of
``shop_db/models.py`` comes with a revision under ``versions/`` (``make migration m="why"``); a
test fails when the models and the revisions differ.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text

HERE = Path(__file__).resolve().parent
# Any fixed number: Postgres's advisory lock key for "migrating this shop database".
_PG_LOCK = 7_734_221_901


def config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


@cache
def head() -> str:
    """The newest revision (read once per process: the revisions ship with the code)."""
    return ScriptDirectory.from_config(config()).get_current_head() or ""


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Bring the database to the head revision; returns whether anything ran. Concurrent shop starts
    take turns (Postgres: an advisory lock held by the upgrade's transaction; SQLite: its write lock)."""
    if current(engine) == head():
        return False
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        cfg = config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True


def new_revision(message: str) -> None:
    """Write the next revision from the difference between the head and the models (review it!)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/head.sqlite"
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        number = f"{int(head()) + 1:04d}"
        command.revision(config(url), message=message, autogenerate=True, rev_id=number)
