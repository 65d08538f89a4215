"""Alembic's environment for the shop database: run by ``shop_db.migrations.upgrade`` on the
connection it passes, or by ``alembic`` itself on ``sqlalchemy.url`` (``make migration`` writes a new
revision from the models)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from rossmann_local.shop_db.models import ShopBase

config = context.config


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=ShopBase.metadata, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters by copying tables
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    run(given)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
