"""What a shift writes into the shop database, each as one replace-the-shift unit of work.

Stock is a ledger: delivered minus sold. ``products.stock_quantity`` is that sum, kept by each
write adding the change it makes (rows removed and rows added), so re-running a shift (which first
removes that shift's own rows) can never count its deliveries or sales twice, and the opening stock
of a shift is the same on every re-run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.simulation import Delivery as PlannedDelivery
from rossmann_local.domain.simulation import DeliveryLine, Receipt, ShelfProduct, ShiftSales
from rossmann_local.shop_db.cache import dialect_insert
from rossmann_local.shop_db.models import (
    Category,
    Delivery,
    DeliveryItem,
    Product,
    Shift,
    Transaction,
    TransactionItem,
)

RECEIPT_COLUMNS = ("transaction_id", "terminal_id", "cashier_id", "transaction_time", "amount",
                   "loyalty_discount", "discount_type", "total_amount", "payment_method")
LINE_COLUMNS = ("item_id", "product_id", "quantity", "unit_price", "product_name", "product_barcode",
                "category_id", "category_name", "product_price", "product_discount")


def shelf(conn: Connection) -> list[ShelfProduct]:
    """The products on sale: in the cache, priced and not deleted, with their category's current name."""
    rows = conn.execute(
        select(Product.product_id, Product.name, Product.barcode, Product.category_id,
               Category.name.label("category_name"), Product.price, Product.discount)
        .join(Category, Category.category_id == Product.category_id)
        .where(Product.is_deleted.is_(False), Product.price.is_not(None))
        .order_by(Product.product_id)
    )
    return [ShelfProduct(**row._mapping) for row in rows]


def stock_at(conn: Connection, moment: datetime) -> dict[int, int]:
    """Stock per product just before ``moment``: the current stock less what was delivered, plus what
    was sold, at or after it. A shift run in order has only its own movements after its start, so
    this costs the shift, not the shop's whole history (which summing every movement before
    ``moment`` would: quadratic over a year of shifts)."""
    stock = {pid: qty for pid, qty in conn.execute(select(Product.product_id, Product.stock_quantity))}
    # The later deliveries and receipts are selected first (through their time index), then their
    # lines: written as a join, SQLite walked every line in product order (the GROUP BY's index).
    later_deliveries = select(Delivery.delivery_id).where(Delivery.accepted_time >= moment)
    delivered_later = conn.execute(
        select(DeliveryItem.product_id, func.sum(DeliveryItem.quantity))
        .where(DeliveryItem.delivery_id.in_(later_deliveries))
        .group_by(DeliveryItem.product_id)
    )
    later_receipts = select(Transaction.transaction_id).where(Transaction.transaction_time >= moment)
    sold_later = conn.execute(
        select(TransactionItem.product_id, func.sum(TransactionItem.quantity))
        .where(TransactionItem.transaction_id.in_(later_receipts))
        .group_by(TransactionItem.product_id)
    )
    for product_id, units in delivered_later:
        stock[product_id] = stock.get(product_id, 0) - int(units)
    for product_id, units in sold_later:
        stock[product_id] = stock.get(product_id, 0) + int(units)
    return {pid: qty for pid, qty in stock.items() if qty}


def ledger_stock(conn: Connection) -> dict[int, int]:
    """Stock per product summed over the whole ledger: what ``products.stock_quantity`` must equal
    (the tests' reference)."""
    delivered = conn.execute(select(DeliveryItem.product_id, func.sum(DeliveryItem.quantity))
                             .group_by(DeliveryItem.product_id))
    sold = conn.execute(select(TransactionItem.product_id, func.sum(TransactionItem.quantity))
                        .group_by(TransactionItem.product_id))
    stock: dict[int, int] = {}
    for product_id, units in delivered:
        stock[product_id] = int(units)
    for product_id, units in sold:
        stock[product_id] = stock.get(product_id, 0) - int(units)
    return {pid: qty for pid, qty in stock.items() if qty}


def stock_movements(conn: Connection, start: datetime, end: datetime) -> list[tuple[datetime, int, int]]:
    """Every change of stock in [start, end): (time, product, +units delivered or -units sold), in time order."""
    delivered = conn.execute(
        select(Delivery.accepted_time, DeliveryItem.product_id, DeliveryItem.quantity)
        .join(Delivery, Delivery.delivery_id == DeliveryItem.delivery_id)
        .where(Delivery.accepted_time >= start, Delivery.accepted_time < end))
    sold = conn.execute(
        select(Transaction.transaction_time, TransactionItem.product_id, -TransactionItem.quantity)
        .join(Transaction, Transaction.transaction_id == TransactionItem.transaction_id)
        .where(Transaction.transaction_time >= start, Transaction.transaction_time < end))
    return sorted((at, int(product), int(units)) for at, product, units in [*delivered, *sold])


def change_stock(conn: Connection, changes: Mapping[int, int]) -> None:
    """Add each product's change of units to ``products.stock_quantity``, in the write's transaction:
    the stock stays the ledger's sum without summing the ledger."""
    table = Product.__table__
    rows = [{"product": pid, "units": units} for pid, units in sorted(changes.items()) if units]
    if rows:
        conn.execute(update(table).where(table.c.product_id == bindparam("product"))
                     .values(stock_quantity=table.c.stock_quantity + bindparam("units")), rows)


def _bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Many rows at once, inside the caller's transaction, each value through its column's own bind
    processor (so the rows stored are exactly what an INSERT would store, UTC times included): COPY on
    Postgres (psycopg 3), where a row-by-row executemany costs a protocol round per row; on SQLite, the
    driver's ``executemany`` of one statement compiled once, without SQLAlchemy's work per row (which
    was most of a shift's insert time)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        columns = tuple(rows[0])
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with conn.connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in _bound_values(conn, table, columns, rows):
                copy.write_row(row)
    elif conn.dialect.name == "sqlite":
        statement, columns = _insert_statement(conn, table, tuple(rows[0]))
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(statement, _bound_values(conn, table, columns, rows))
        finally:
            cursor.close()
    else:
        conn.execute(insert(table), rows)


def _bound_values(conn: Connection, table: Table, columns: Sequence[str],
                  rows: list[dict[str, Any]]) -> Iterator[list[Any]]:
    # The dialect's own type (SQLite stores times as text in its own format), as an INSERT would bind.
    processors = [table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for c in columns]
    for row in rows:
        yield [p(row[c]) if p else row[c] for c, p in zip(columns, processors, strict=True)]


_INSERTS: dict[tuple[str, str, frozenset[str]], tuple[str, tuple[str, ...]]] = {}


def _insert_statement(conn: Connection, table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """``INSERT INTO table (columns) VALUES (?, ...)`` in the driver's parameter style, compiled once,
    and the columns in the order it binds them."""
    key = (conn.dialect.name, table.name, frozenset(columns))
    if key not in _INSERTS:
        compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
        _INSERTS[key] = (str(compiled), tuple(compiled.positiontup or ()))
    return _INSERTS[key]


def replace_shift_deliveries(conn: Connection, shift: ShiftWindow, deliveries: Sequence[PlannedDelivery]) -> None:
    ids = select(Delivery.delivery_id).where(Delivery.shift_start == shift.start).scalar_subquery()
    changes: Counter[int] = Counter()
    for product_id, quantity in conn.execute(select(DeliveryItem.product_id, DeliveryItem.quantity)
                                             .where(DeliveryItem.delivery_id.in_(ids))):
        changes[product_id] -= quantity
    conn.execute(delete(DeliveryItem).where(DeliveryItem.delivery_id.in_(ids)))
    conn.execute(delete(Delivery).where(Delivery.shift_start == shift.start))
    _bulk_insert(conn, Delivery.__table__, [
        {"delivery_id": d.delivery_id, "shift_start": shift.start, "accepted_time": d.accepted_time,
         "courier_id": d.courier_id, "admin_id": d.admin_id}
        for d in deliveries
    ])
    _bulk_insert(conn, DeliveryItem.__table__, [
        {"delivery_id": d.delivery_id, "product_id": line.product_id, "quantity": line.quantity,
         "product_name": line.product_name, "category_id": line.category_id, "category_name": line.category_name}
        for d in deliveries for line in d.lines
    ])
    for d in deliveries:
        for line in d.lines:
            changes[line.product_id] += line.quantity
    change_stock(conn, changes)


def shift_deliveries(conn: Connection, shift: ShiftWindow) -> list[PlannedDelivery]:
    """The deliveries recorded for this shift, as the sales simulation needs them."""
    lines: dict[int, list[DeliveryLine]] = {}
    for li in conn.execute(
        select(DeliveryItem).join(Delivery, Delivery.delivery_id == DeliveryItem.delivery_id)
        .where(Delivery.shift_start == shift.start).order_by(DeliveryItem.delivery_id, DeliveryItem.product_id)
    ):
        lines.setdefault(li.delivery_id, []).append(DeliveryLine(
            product_id=li.product_id, quantity=li.quantity, product_name=li.product_name,
            category_id=li.category_id, category_name=li.category_name))
    headers = conn.execute(select(Delivery).where(Delivery.shift_start == shift.start).order_by(Delivery.accepted_time))
    return [PlannedDelivery(delivery_id=h.delivery_id, accepted_time=h.accepted_time, courier_id=h.courier_id,
                            admin_id=h.admin_id, lines=tuple(lines.get(h.delivery_id, ())))
            for h in headers]


def receipt_row(receipt: Receipt) -> tuple:
    """A receipt with its lines as the shop database holds it (times in UTC), for comparing what is
    stored with what the simulation gives."""
    return (*(getattr(receipt, c) if c != "transaction_time" else receipt.transaction_time.astimezone(UTC)
              for c in RECEIPT_COLUMNS),
            tuple(tuple(getattr(line, c) for c in LINE_COLUMNS) for line in receipt.lines))


def stored_receipts(conn: Connection, shift: ShiftWindow) -> list[tuple]:
    """The shift's receipts in the shop database, in id (= time) order, as ``receipt_row`` gives them."""
    lines: dict[int, list[tuple]] = {}
    for row in conn.execute(
        select(*(TransactionItem.__table__.c[c] for c in LINE_COLUMNS), TransactionItem.transaction_id)
        .join(Transaction, Transaction.transaction_id == TransactionItem.transaction_id)
        .where(Transaction.shift_start == shift.start).order_by(TransactionItem.item_id)
    ):
        lines.setdefault(row[-1], []).append(tuple(row[:-1]))
    receipts = conn.execute(select(*(Transaction.__table__.c[c] for c in RECEIPT_COLUMNS))
                            .where(Transaction.shift_start == shift.start).order_by(Transaction.transaction_id))
    time_at = RECEIPT_COLUMNS.index("transaction_time")
    return [(*row[:time_at], row[time_at].astimezone(UTC), *row[time_at + 1:], tuple(lines.get(row[0], ())))
            for row in receipts]


def shift_receipt_count(conn: Connection, shift: ShiftWindow) -> int:
    return conn.scalar(select(func.count()).select_from(Transaction).where(Transaction.shift_start == shift.start)) or 0


def delete_receipts_from(conn: Connection, shift: ShiftWindow, transaction_id: int) -> None:
    """The shift's receipts from ``transaction_id`` on (ids follow time within a shift)."""
    ids = (select(Transaction.transaction_id)
           .where(Transaction.shift_start == shift.start, Transaction.transaction_id >= transaction_id)
           .scalar_subquery())
    conn.execute(delete(TransactionItem).where(TransactionItem.transaction_id.in_(ids)))
    conn.execute(delete(Transaction).where(Transaction.shift_start == shift.start,
                                           Transaction.transaction_id >= transaction_id))


def shift_progress(conn: Connection, shift: ShiftWindow) -> tuple[bool, bool]:
    """Whether the shift's deliveries, and its sales, are recorded."""
    row = conn.execute(select(Shift.deliveries_recorded_at_utc, Shift.sales_recorded_at_utc)
                       .where(Shift.shift_start == shift.start)).first()
    return (False, False) if row is None else (row[0] is not None, row[1] is not None)


def last_shift_sold(conn: Connection) -> datetime | None:
    """The start of the newest shift whose sales are recorded."""
    return conn.scalar(select(func.max(Shift.shift_start)).where(Shift.sales_recorded_at_utc.is_not(None)))


def shifts_sold_before(conn: Connection, start: datetime) -> int:
    """How many shifts before ``start`` have their sales recorded."""
    return int(conn.scalar(select(func.count()).select_from(Shift).where(
        Shift.shift_start < start, Shift.sales_recorded_at_utc.is_not(None))))


def insert_receipts(conn: Connection, shift: ShiftWindow, receipts: Sequence[Receipt]) -> None:
    _bulk_insert(conn, Transaction.__table__, [
        {"shift_start": shift.start, **{c: getattr(r, c) for c in RECEIPT_COLUMNS}} for r in receipts
    ])
    _bulk_insert(conn, TransactionItem.__table__, [
        {"transaction_id": r.transaction_id, **{c: getattr(line, c) for c in LINE_COLUMNS}}
        for r in receipts for line in r.lines
    ])


def record_shift(conn: Connection, shift: ShiftWindow, admin_id: int, **figures: Any) -> None:
    """Upsert the shift's bookkeeping row with the figures of the step that just ran."""
    stmt = dialect_insert(conn, Shift.__table__)
    columns = ["shift_end", "admin_id", *figures]
    stmt = stmt.on_conflict_do_update(index_elements=["shift_start"], set_={k: stmt.excluded[k] for k in columns})
    conn.execute(stmt, {"shift_start": shift.start, "shift_end": shift.end, "admin_id": admin_id, **figures})


def record_shift_sales(conn: Connection, shift: ShiftWindow, admin_id: int, sales: ShiftSales,
                       now: datetime) -> None:
    record_shift(conn, shift, admin_id, receipts=len(sales.receipts), receipt_lines=sales.lines,
                 units_sold=sales.units, revenue=sales.revenue, sales_recorded_at_utc=now)


def record_shift_deliveries(conn: Connection, shift: ShiftWindow, admin_id: int,
                            deliveries: Sequence[PlannedDelivery], now: datetime) -> None:
    units = sum(line.quantity for d in deliveries for line in d.lines)
    record_shift(conn, shift, admin_id, units_delivered=units, deliveries_recorded_at_utc=now)


def earlier_shifts_without_sales(conn: Connection, start: datetime) -> list[datetime]:
    """Shifts before ``start`` whose deliveries were recorded but whose sales were not (yet)."""
    return list(conn.scalars(select(Shift.shift_start).where(
        Shift.shift_start < start, Shift.deliveries_recorded_at_utc.is_not(None),
        Shift.sales_recorded_at_utc.is_(None)).order_by(Shift.shift_start)))


def negative_stock(conn: Connection) -> dict[int, int]:
    rows = conn.execute(select(Product.product_id, Product.stock_quantity).where(Product.stock_quantity < 0))
    return {pid: qty for pid, qty in rows}


def shift_totals(conn: Connection, shift: ShiftWindow) -> dict[str, Decimal | int]:
    """Receipts, lines, units and revenue of the shift as stored (what reports reconcile against)."""
    receipts, revenue = conn.execute(
        select(func.count(), func.coalesce(func.sum(Transaction.total_amount), 0))
        .where(Transaction.shift_start == shift.start)
    ).one()
    lines, units = conn.execute(
        select(func.count(), func.coalesce(func.sum(TransactionItem.quantity), 0))
        .join(Transaction, Transaction.transaction_id == TransactionItem.transaction_id)
        .where(Transaction.shift_start == shift.start)
    ).one()
    return {"receipts": receipts, "lines": lines, "units": int(units), "revenue": Decimal(revenue)}


def shelf_stock(conn: Connection, at: datetime, on_sale: Sequence[int]) -> tuple[int, int]:
    """(units on the shelf, products on sale with none left) at a moment, from the ledger."""
    stock = stock_at(conn, at)
    return sum(stock.get(p, 0) for p in on_sale), sum(1 for p in on_sale if stock.get(p, 0) <= 0)


def shift_delivery_totals(conn: Connection, shift: ShiftWindow) -> dict[str, int]:
    """Delivered lines (products) and units of the shift as stored (what the delivery report matches)."""
    lines, units = conn.execute(
        select(func.count(), func.coalesce(func.sum(DeliveryItem.quantity), 0))
        .join(Delivery, Delivery.delivery_id == DeliveryItem.delivery_id)
        .where(Delivery.shift_start == shift.start)
    ).one()
    return {"lines": int(lines), "units": int(units)}


def unit_prices_charged(conn: Connection, shift: ShiftWindow, product_id: int) -> list[Decimal]:
    """The distinct unit prices the shift's receipts charged for a product, lowest first."""
    return sorted(set(conn.scalars(
        select(TransactionItem.unit_price).join(Transaction)
        .where(Transaction.shift_start == shift.start, TransactionItem.product_id == product_id))))
