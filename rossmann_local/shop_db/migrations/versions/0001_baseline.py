"""Baseline: the shop database as release 0.1.0 (commit 11c97e9) made it with create_all.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import rossmann_local.sqltypes

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _missing(table: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    """The tables of release 0.1.0, each only where it is missing: a database made by that release
    (or an older one, before stock_message_offsets) keeps its tables and rows as they are."""
    if _missing("categories"):
        op.create_table(
            "categories",
            sa.Column("category_id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("name", sa.String(length=255), nullable=False),
            sa.Column("description", sa.String(length=2048), nullable=True),
            sa.Column("is_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
            sa.Column("updated_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("category_id"),
        )

    if _missing("category_versions"):
        op.create_table(
            "category_versions",
            sa.Column("category_id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("valid_from_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("name", sa.String(length=255), nullable=False),
            sa.Column("description", sa.String(length=2048), nullable=True),
            sa.Column("is_deleted", sa.Boolean(), nullable=False),
            sa.PrimaryKeyConstraint("category_id", "valid_from_utc"),
        )

    if _missing("deliveries"):
        op.create_table(
            "deliveries",
            sa.Column("delivery_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("shift_start", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("accepted_time", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("courier_id", sa.Integer(), nullable=False),
            sa.Column("admin_id", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("delivery_id"),
        )
        with op.batch_alter_table("deliveries", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_deliveries_accepted_time"), ["accepted_time"], unique=False)
            batch_op.create_index(batch_op.f("ix_deliveries_shift_start"), ["shift_start"], unique=False)

    if _missing("price_versions"):
        op.create_table(
            "price_versions",
            sa.Column("product_id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("valid_from_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=False),
            sa.Column("discount", sa.Numeric(precision=5, scale=4), nullable=False),
            sa.PrimaryKeyConstraint("product_id", "valid_from_utc"),
        )

    if _missing("product_versions"):
        op.create_table(
            "product_versions",
            sa.Column("product_id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("valid_from_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("category_id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=255), nullable=False),
            sa.Column("description", sa.String(length=2048), nullable=True),
            sa.Column("barcode", sa.String(length=12), nullable=False),
            sa.Column("is_deleted", sa.Boolean(), nullable=False),
            sa.PrimaryKeyConstraint("product_id", "valid_from_utc"),
        )

    if _missing("shift_reports"):
        op.create_table(
            "shift_reports",
            sa.Column("shift_start", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("report", sa.String(length=32), nullable=False),
            sa.Column("rows", sa.Integer(), nullable=False),
            sa.Column("reported_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("shift_start", "report"),
        )

    if _missing("shifts"):
        op.create_table(
            "shifts",
            sa.Column("shift_start", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("shift_end", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("admin_id", sa.Integer(), nullable=False),
            sa.Column("receipts", sa.Integer(), nullable=False),
            sa.Column("receipt_lines", sa.Integer(), nullable=False),
            sa.Column("units_sold", sa.Integer(), nullable=False),
            sa.Column("revenue", sa.Numeric(precision=12, scale=2), nullable=False),
            sa.Column("units_delivered", sa.Integer(), nullable=False),
            sa.Column("sales_recorded_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=True),
            sa.Column("deliveries_recorded_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=True),
            sa.PrimaryKeyConstraint("shift_start"),
        )

    if _missing("stock_message_offsets"):
        op.create_table(
            "stock_message_offsets",
            sa.Column("shift_start", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("checkpoint", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("part", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("topic_partition", sa.Integer(), nullable=False),
            sa.Column("topic_offset", sa.BigInteger(), nullable=False),
            sa.Column("confirmed_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("verified_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=True),
            sa.PrimaryKeyConstraint("shift_start", "checkpoint", "part"),
        )
        with op.batch_alter_table("stock_message_offsets", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_stock_message_offsets_verified_at_utc"), ["verified_at_utc"], unique=False
            )

    if _missing("stock_messages"):
        op.create_table(
            "stock_messages",
            sa.Column("shift_start", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("checkpoint", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("sent_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=True),
            sa.PrimaryKeyConstraint("shift_start", "checkpoint"),
        )
        with op.batch_alter_table("stock_messages", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_stock_messages_sent_at_utc"), ["sent_at_utc"], unique=False)

    if _missing("sync_state"):
        op.create_table(
            "sync_state",
            sa.Column("entity", sa.String(length=32), nullable=False),
            sa.Column("watermark_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("last_synced_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("entity"),
        )

    if _missing("transactions"):
        op.create_table(
            "transactions",
            sa.Column("transaction_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("shift_start", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("terminal_id", sa.Integer(), nullable=False),
            sa.Column("cashier_id", sa.Integer(), nullable=False),
            sa.Column("transaction_time", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
            sa.Column("loyalty_discount", sa.Numeric(precision=5, scale=4), nullable=False),
            sa.Column("discount_type", sa.String(length=16), nullable=False),
            sa.Column("total_amount", sa.Numeric(precision=12, scale=2), nullable=False),
            sa.Column("payment_method", sa.String(length=16), nullable=False),
            sa.PrimaryKeyConstraint("transaction_id"),
        )
        with op.batch_alter_table("transactions", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_transactions_shift_start"), ["shift_start"], unique=False)
            batch_op.create_index(batch_op.f("ix_transactions_transaction_time"), ["transaction_time"], unique=False)

    if _missing("products"):
        op.create_table(
            "products",
            sa.Column("product_id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("category_id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=255), nullable=False),
            sa.Column("description", sa.String(length=2048), nullable=True),
            sa.Column("barcode", sa.String(length=12), nullable=False),
            sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=True),
            sa.Column("discount", sa.Numeric(precision=5, scale=4), nullable=True),
            sa.Column("stock_quantity", sa.Integer(), server_default="0", nullable=False),
            sa.Column("is_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
            sa.Column("updated_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.Column("price_updated_at_utc", rossmann_local.sqltypes.UtcDateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["category_id"],
                ["categories.category_id"],
            ),
            sa.PrimaryKeyConstraint("product_id"),
            sa.UniqueConstraint("barcode"),
        )

    if _missing("delivery_items"):
        op.create_table(
            "delivery_items",
            sa.Column("delivery_id", sa.BigInteger(), nullable=False),
            sa.Column("product_id", sa.Integer(), nullable=False),
            sa.Column("quantity", sa.Integer(), nullable=False),
            sa.Column("product_name", sa.String(length=255), nullable=False),
            sa.Column("category_id", sa.Integer(), nullable=False),
            sa.Column("category_name", sa.String(length=255), nullable=False),
            sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.delivery_id"], ondelete="CASCADE"),
            sa.ForeignKeyConstraint(
                ["product_id"],
                ["products.product_id"],
            ),
            sa.PrimaryKeyConstraint("delivery_id", "product_id"),
        )
        with op.batch_alter_table("delivery_items", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_delivery_items_product_id"), ["product_id"], unique=False)

    if _missing("transaction_items"):
        op.create_table(
            "transaction_items",
            sa.Column("item_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("transaction_id", sa.BigInteger(), nullable=False),
            sa.Column("product_id", sa.Integer(), nullable=False),
            sa.Column("quantity", sa.Integer(), nullable=False),
            sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=False),
            sa.Column("product_name", sa.String(length=255), nullable=False),
            sa.Column("product_barcode", sa.String(length=12), nullable=False),
            sa.Column("category_id", sa.Integer(), nullable=False),
            sa.Column("category_name", sa.String(length=255), nullable=False),
            sa.Column("product_price", sa.Numeric(precision=12, scale=2), nullable=False),
            sa.Column("product_discount", sa.Numeric(precision=5, scale=4), nullable=False),
            sa.ForeignKeyConstraint(
                ["product_id"],
                ["products.product_id"],
            ),
            sa.ForeignKeyConstraint(["transaction_id"], ["transactions.transaction_id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("item_id"),
        )
        with op.batch_alter_table("transaction_items", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_transaction_items_product_id"), ["product_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_transaction_items_transaction_id"), ["transaction_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("transaction_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transaction_items_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_transaction_items_product_id"))

    op.drop_table("transaction_items")
    with op.batch_alter_table("delivery_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_items_product_id"))

    op.drop_table("delivery_items")
    op.drop_table("products")
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transactions_transaction_time"))
        batch_op.drop_index(batch_op.f("ix_transactions_shift_start"))

    op.drop_table("transactions")
    op.drop_table("sync_state")
    with op.batch_alter_table("stock_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stock_messages_sent_at_utc"))

    op.drop_table("stock_messages")
    with op.batch_alter_table("stock_message_offsets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stock_message_offsets_verified_at_utc"))

    op.drop_table("stock_message_offsets")
    op.drop_table("shifts")
    op.drop_table("shift_reports")
    op.drop_table("product_versions")
    op.drop_table("price_versions")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_shift_start"))
        batch_op.drop_index(batch_op.f("ix_deliveries_accepted_time"))

    op.drop_table("deliveries")
    op.drop_table("category_versions")
    op.drop_table("categories")
