"""What the shop reports: the shift's own rows, with the values they had at sale and delivery time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.shop_db.cache import dialect_insert
from rossmann_local.shop_db.models import Delivery, DeliveryItem, Shift, ShiftReport, Transaction, TransactionItem


def _shift_admin(conn: Connection, shift: ShiftWindow) -> int:
    admin_id = conn.scalar(select(Shift.admin_id).where(Shift.shift_start == shift.start))
    if admin_id is None:
        raise LookupError(f"shift {shift.start.isoformat()} has not run in this shop: nothing to report")
    return admin_id


def transactions_report_rows(conn: Connection, shift: ShiftWindow, shop_id: int, country: str,
                             city: str) -> list[tuple[Any, ...]]:
    """One row per receipt line of this shift, in ``shop_reports.transactions`` column order."""
    admin_id = _shift_admin(conn, shift)
    lines = conn.execute(
        select(Transaction, TransactionItem)
        .join(TransactionItem, TransactionItem.transaction_id == Transaction.transaction_id)
        .where(Transaction.shift_start == shift.start)
        .order_by(TransactionItem.item_id)
    ).all()
    rows = []
    for line in lines:
        r = line._mapping
        rows.append((
            shop_id, country, city, r["terminal_id"], admin_id, r["cashier_id"], r["transaction_id"],
            r["transaction_time"], r["payment_method"], r["product_id"], r["product_name"], r["product_barcode"],
            r["category_id"], r["category_name"], float(r["product_price"]), float(r["product_discount"]),
            float(r["unit_price"]), r["quantity"], float(r["amount"]), float(r["loyalty_discount"]),
            r["discount_type"], float(r["total_amount"]), r["item_id"], shift.start,
        ))
    return rows


def delivery_report_rows(conn: Connection, shift: ShiftWindow, shop_id: int, country: str,
                         city: str) -> list[tuple[Any, ...]]:
    """One row per delivered product of this shift, in ``shop_reports.delivery`` column order."""
    lines = conn.execute(
        select(Delivery, DeliveryItem)
        .join(DeliveryItem, DeliveryItem.delivery_id == Delivery.delivery_id)
        .where(Delivery.shift_start == shift.start)
        .order_by(Delivery.delivery_id, DeliveryItem.product_id)
    ).all()
    return [
        (shop_id, country, city, r["admin_id"], r["courier_id"], r["product_id"], r["product_name"],
         r["category_id"], r["category_name"], r["quantity"], r["accepted_time"], r["delivery_id"], shift.start)
        for r in (line._mapping for line in lines)
    ]


def record_report(conn: Connection, shift: ShiftWindow, report: str, rows: int, now: datetime) -> None:
    stmt = dialect_insert(conn, ShiftReport.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["shift_start", "report"],
        set_={"rows": stmt.excluded.rows, "reported_at_utc": stmt.excluded.reported_at_utc},
    )
    conn.execute(stmt, {"shift_start": shift.start, "report": report, "rows": rows, "reported_at_utc": now})

