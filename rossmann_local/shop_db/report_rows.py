"""What the shop reports: the shift's own rows, with the values they had at sale and delivery time.

Each report column is named once, beside where its value comes from; the rows come back bound to
those names (``ReportRows``), which must be exactly the columns of ``reports.schema``, so a column
added or moved there cannot silently shift values. Float64 columns are cast by the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, Float, Select, cast, extract, func, select

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.reports.schema import DELIVERY, TABLES, TRANSACTIONS
from rossmann_local.reports.writer import ReportRows
from rossmann_local.shop_db.cache import dialect_insert
from rossmann_local.shop_db.models import Delivery, DeliveryItem, Shift, ShiftReport, Transaction, TransactionItem

# Report column -> where a receipt line's value comes from.
RECEIPT_LINE_SOURCES: dict[str, ColumnElement[Any]] = {
    "terminal_id": Transaction.terminal_id, "cashier_id": Transaction.cashier_id,
    "transaction_id": Transaction.transaction_id, "transaction_time": Transaction.transaction_time,
    "payment_method": Transaction.payment_method, "product_id": TransactionItem.product_id,
    "product_name": TransactionItem.product_name, "product_barcode": TransactionItem.product_barcode,
    "category_id": TransactionItem.category_id, "category_name": TransactionItem.category_name,
    "product_price": TransactionItem.product_price, "product_discount": TransactionItem.product_discount,
    "unit_price": TransactionItem.unit_price, "quantity": TransactionItem.quantity,
    "transaction_amount": Transaction.amount, "loyalty_discount": Transaction.loyalty_discount,
    "discount_type": Transaction.discount_type, "transaction_total_amount": Transaction.total_amount,
    "item_id": TransactionItem.item_id, "shift_start": Transaction.shift_start,
}

# Report column -> where a delivered product's value comes from.
DELIVERED_PRODUCT_SOURCES: dict[str, ColumnElement[Any]] = {
    "admin_id": Delivery.admin_id, "courier_id": Delivery.courier_id, "product_id": DeliveryItem.product_id,
    "product_name": DeliveryItem.product_name, "category_id": DeliveryItem.category_id,
    "category_name": DeliveryItem.category_name, "quantity": DeliveryItem.quantity,
    "accepted_time": Delivery.accepted_time, "delivery_id": Delivery.delivery_id, "shift_start": Delivery.shift_start,
}


def _epoch_seconds(column: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """A stored UTC time as seconds since 1970, computed by the database: ClickHouse takes a
    ``DateTime`` as those seconds, and reading the text (SQLite) or timestamp back into aware Python
    datetimes was most of a report's read time."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", column), BigInteger)
    return cast(extract("epoch", column), BigInteger)  # a timestamp without time zone holds UTC here


def _report_select(table: str, sources: Mapping[str, ColumnElement[Any]], dialect: str) -> Select[Any]:
    """SELECT each source labelled with its report column, cast to float where the report says
    Float64, as epoch seconds where it says DateTime."""
    types = dict(TABLES[table][0])

    def value(name: str, source: ColumnElement[Any]) -> ColumnElement[Any]:
        if types[name] == "Float64":
            return cast(source, Float)
        if types[name].startswith("DateTime"):
            return _epoch_seconds(source, dialect)
        return source

    return select(*[value(name, source).label(name) for name, source in sources.items()])


def _report_rows(conn: Connection, table: str, query: Select[Any], constants: dict[str, Any]) -> ReportRows:
    """The query's rows, each followed by the values every row of the shift shares."""
    result = conn.execute(query)
    shared = tuple(constants.values())
    return ReportRows(table, (*result.keys(), *constants), [(*row, *shared) for row in result])


def _shift_admin(conn: Connection, shift: ShiftWindow) -> int:
    admin_id = conn.scalar(select(Shift.admin_id).where(Shift.shift_start == shift.start))
    if admin_id is None:
        raise LookupError(f"shift {shift.start.isoformat()} has not run in this shop: nothing to report")
    return admin_id


def transactions_report_rows(conn: Connection, shift: ShiftWindow, shop_id: int, country: str,
                             city: str) -> ReportRows:
    """One row per receipt line of this shift, for ``shop_reports.transactions``."""
    constants = {"shop_id": shop_id, "country": country, "city": city, "admin_id": _shift_admin(conn, shift)}
    query = (_report_select(TRANSACTIONS, RECEIPT_LINE_SOURCES, conn.dialect.name)
             .join_from(Transaction, TransactionItem, TransactionItem.transaction_id == Transaction.transaction_id)
             .where(Transaction.shift_start == shift.start).order_by(TransactionItem.item_id))
    return _report_rows(conn, TRANSACTIONS, query, constants)


def delivery_report_rows(conn: Connection, shift: ShiftWindow, shop_id: int, country: str, city: str) -> ReportRows:
    """One row per delivered product of this shift, for ``shop_reports.delivery``."""
    query = (_report_select(DELIVERY, DELIVERED_PRODUCT_SOURCES, conn.dialect.name)
             .join_from(Delivery, DeliveryItem, DeliveryItem.delivery_id == Delivery.delivery_id)
             .where(Delivery.shift_start == shift.start).order_by(Delivery.delivery_id, DeliveryItem.product_id))
    return _report_rows(conn, DELIVERY, query, {"shop_id": shop_id, "country": country, "city": city})


def record_report(conn: Connection, shift: ShiftWindow, report: str, rows: int, now: datetime) -> None:
    stmt = dialect_insert(conn, ShiftReport.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["shift_start", "report"],
        set_={"rows": stmt.excluded.rows, "reported_at_utc": stmt.excluded.reported_at_utc},
    )
    conn.execute(stmt, {"shift_start": shift.start, "report": report, "rows": rows, "reported_at_utc": now})
