"""On SQLite, the catalogue history's tables become their primary key's B-tree (WITHOUT ROWID): every
version insert wrote a rowid table and the index on (key, valid_from_utc) both. Their rows are copied
as they are. Other databases are left as they were.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

HISTORY_TABLES = ("category_versions", "product_versions", "price_versions")


def _recreate(with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in HISTORY_TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_with_rowid": with_rowid}):
            pass


def upgrade() -> None:
    _recreate(with_rowid=False)


def downgrade() -> None:
    _recreate(with_rowid=True)
