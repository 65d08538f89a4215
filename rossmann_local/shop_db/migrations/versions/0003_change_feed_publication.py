"""A change feed for CDC tools (Debezium, a logical replication subscriber): on Postgres, the shop's
database publishes its catalogue cache, receipts and deliveries for logical replication. SQLite has
no such feed: nothing is done there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen here as this revision made it (literal SQL, no interpolation); shop_db.models.CHANGE_FEED_PUBLICATION
# names the publication for the code.


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE PUBLICATION rossmann_shop_changes FOR TABLE categories, products, transactions, "
                   "transaction_items, deliveries, delivery_items")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP PUBLICATION IF EXISTS rossmann_shop_changes")
