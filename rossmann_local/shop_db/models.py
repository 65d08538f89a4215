"""The shop's local OLTP database: docs/contracts.md's tables plus what a correct shop needs.

Added to the reference: ``updated_at_utc`` on cache rows (versioned upserts), the catalogue's
history (every version of a category, product and city price from the time it took effect, in
simulated time), the shift key and sale-time product values on receipts, local deliveries, and
sync/shift bookkeeping.
Timestamps are stored as naive UTC and come back timezone-aware, the same on SQLite and Postgres.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rossmann_local.sqltypes import FractionColumn, MoneyColumn, UtcDateTime

# On Postgres, the publication a CDC tool (Debezium's pgoutput plugin, a logical replication
# subscriber) reads the shop's changes from: categories, products, transactions, transaction_items,
# deliveries and delivery_items (migration 0003).
CHANGE_FEED_PUBLICATION = "rossmann_shop_changes"


class ShopBase(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: UtcDateTime, Decimal: MoneyColumn}


class Category(ShopBase):
    __tablename__ = "categories"

    category_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Upstream's server-side change time; a row changes only when an incoming one is newer.
    updated_at_utc: Mapped[datetime]


class Product(ShopBase):
    __tablename__ = "products"

    product_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.category_id"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048))
    barcode: Mapped[str] = mapped_column(String(12), unique=True)
    # The city's price; None while only a description has arrived (such a product is not on sale).
    price: Mapped[Decimal | None]
    discount: Mapped[Decimal | None] = mapped_column(FractionColumn)
    # Local: upserts from upstream never touch it; the stock ledger below recomputes it.
    stock_quantity: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Two versions: descriptive fields and the city's price change on different topics, in no
    # guaranteed order, so each group is upserted only when its own incoming version is newer.
    updated_at_utc: Mapped[datetime]
    price_updated_at_utc: Mapped[datetime]


class Transaction(ShopBase):
    """One receipt. Ids are deterministic (shift code + sequence) so a re-run rewrites the same ids."""

    __tablename__ = "transactions"

    transaction_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    shift_start: Mapped[datetime] = mapped_column(index=True)
    terminal_id: Mapped[int]
    cashier_id: Mapped[int]
    transaction_time: Mapped[datetime] = mapped_column(index=True)
    amount: Mapped[Decimal]
    loyalty_discount: Mapped[Decimal] = mapped_column(FractionColumn)
    discount_type: Mapped[str] = mapped_column(String(16))
    total_amount: Mapped[Decimal]
    payment_method: Mapped[str] = mapped_column(String(16))


class TransactionItem(ShopBase):
    """One receipt line, with the product as it was at sale time (the report must not use today's)."""

    __tablename__ = "transaction_items"

    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    transaction_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("transactions.transaction_id", ondelete="CASCADE"), index=True
    )
    product_id: Mapped[int] = mapped_column(ForeignKey("products.product_id"), index=True)
    quantity: Mapped[int]
    unit_price: Mapped[Decimal]
    product_name: Mapped[str] = mapped_column(String(255))
    product_barcode: Mapped[str] = mapped_column(String(12))
    category_id: Mapped[int]
    category_name: Mapped[str] = mapped_column(String(255))
    product_price: Mapped[Decimal]
    product_discount: Mapped[Decimal] = mapped_column(FractionColumn)


class Delivery(ShopBase):
    """A delivery accepted by the shop's admin from the courier; kept locally until reported."""

    __tablename__ = "deliveries"

    delivery_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    shift_start: Mapped[datetime] = mapped_column(index=True)
    accepted_time: Mapped[datetime] = mapped_column(index=True)
    courier_id: Mapped[int]
    admin_id: Mapped[int]


class DeliveryItem(ShopBase):
    __tablename__ = "delivery_items"

    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("deliveries.delivery_id", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[int] = mapped_column(ForeignKey("products.product_id"), primary_key=True, index=True)
    quantity: Mapped[int]
    product_name: Mapped[str] = mapped_column(String(255))
    category_id: Mapped[int]
    category_name: Mapped[str] = mapped_column(String(255))


# The history is written by the hundred thousand rows and read by its key: on SQLite its tables are
# their primary key's B-tree (WITHOUT ROWID), not a rowid table plus an index on the key (a sixth of
# the cost of a version insert). Other databases ignore the option.
HISTORY_TABLE_ARGS = {"sqlite_with_rowid": False}


class CategoryVersion(ShopBase):
    """Every version of a category, from the time it took effect (simulated time): the history
    ``categories`` (the current view) is folded from. A version is its key and its time, so the same
    change twice is one version, and a late one goes in at its place."""

    __tablename__ = "category_versions"
    __table_args__ = HISTORY_TABLE_ARGS

    category_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    valid_from_utc: Mapped[datetime] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class ProductVersion(ShopBase):
    """Every version of a product's descriptive fields, from the time it took effect."""

    __tablename__ = "product_versions"
    __table_args__ = HISTORY_TABLE_ARGS

    product_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    valid_from_utc: Mapped[datetime] = mapped_column(primary_key=True)
    category_id: Mapped[int]
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048))
    barcode: Mapped[str] = mapped_column(String(12))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class PriceVersion(ShopBase):
    """Every version of a product's price and discount in the shop's city, from the time it took effect."""

    __tablename__ = "price_versions"
    __table_args__ = HISTORY_TABLE_ARGS

    product_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    valid_from_utc: Mapped[datetime] = mapped_column(primary_key=True)
    price: Mapped[Decimal]
    discount: Mapped[Decimal] = mapped_column(FractionColumn)


class SyncState(ShopBase):
    """How far the cache has synced from the Sync API: the newest upstream ``updated_at_utc`` seen."""

    __tablename__ = "sync_state"

    entity: Mapped[str] = mapped_column(String(32), primary_key=True)
    watermark_utc: Mapped[datetime]
    last_synced_at_utc: Mapped[datetime]


class Shift(ShopBase):
    """Bookkeeping of one shift: who ran it and what it recorded (the reports reconcile against it)."""

    __tablename__ = "shifts"

    shift_start: Mapped[datetime] = mapped_column(primary_key=True)
    shift_end: Mapped[datetime]
    admin_id: Mapped[int]
    receipts: Mapped[int] = mapped_column(default=0)
    receipt_lines: Mapped[int] = mapped_column(default=0)
    units_sold: Mapped[int] = mapped_column(default=0)
    revenue: Mapped[Decimal] = mapped_column(default=Decimal("0"))
    units_delivered: Mapped[int] = mapped_column(default=0)
    sales_recorded_at_utc: Mapped[datetime | None]
    deliveries_recorded_at_utc: Mapped[datetime | None]


class ShiftReport(ShopBase):
    """A report confirmed written to ClickHouse for a shift: the local rows stay, this records that
    (and how many rows) the report holds them."""

    __tablename__ = "shift_reports"

    shift_start: Mapped[datetime] = mapped_column(primary_key=True)
    report: Mapped[str] = mapped_column(String(32), primary_key=True)
    rows: Mapped[int]
    reported_at_utc: Mapped[datetime]


class StockMessage(ShopBase):
    """A stock message for the chain, queued until the broker confirmed it (docs/contracts.md defect 5):
    the absolute levels of the products whose stock changed since the previous checkpoint."""

    __tablename__ = "stock_messages"

    shift_start: Mapped[datetime] = mapped_column(primary_key=True)
    checkpoint: Mapped[datetime] = mapped_column(primary_key=True)
    payload: Mapped[str] = mapped_column(Text)
    sent_at_utc: Mapped[datetime | None] = mapped_column(index=True)


class StockMessageOffset(ShopBase):
    """Where the broker put one part of a stock message, and whether it was read back there after the
    broker had time to make it durable: a confirmed part that later went missing (a broker that
    acknowledged before writing, then died) is found by reading its offset again, and sent again."""

    __tablename__ = "stock_message_offsets"

    shift_start: Mapped[datetime] = mapped_column(primary_key=True)
    checkpoint: Mapped[datetime] = mapped_column(primary_key=True)
    part: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    topic_partition: Mapped[int]
    topic_offset: Mapped[int] = mapped_column(BigInteger)
    confirmed_at_utc: Mapped[datetime]
    verified_at_utc: Mapped[datetime | None] = mapped_column(index=True)


class CatalogueOffset(ShopBase):
    """How far the shop has applied each catalogue topic partition (the next offset to apply), as a
    consumer's committed position: live mode sells only once every change published so far is in."""

    __tablename__ = "catalogue_offsets"

    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    topic_partition: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    next_offset: Mapped[int] = mapped_column(BigInteger)
