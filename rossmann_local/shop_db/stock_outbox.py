"""The shop's queue of stock messages: queued per shift, sent in order, and marked sent only once
the broker confirmed them (what goes in the queue is planned by ``domain.stock_levels``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select, tuple_, update

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.shop_db.models import StockMessage

Key = tuple[datetime, datetime]  # (shift_start, checkpoint)


def queue_shift_messages(conn: Connection, shift: ShiftWindow, messages: Iterable[tuple[datetime, str]]) -> None:
    """Replace the shift's unsent messages; those already confirmed are never sent again."""
    sent = set(conn.scalars(select(StockMessage.checkpoint).where(
        StockMessage.shift_start == shift.start, StockMessage.sent_at_utc.is_not(None))))
    conn.execute(delete(StockMessage).where(StockMessage.shift_start == shift.start,
                                            StockMessage.sent_at_utc.is_(None)))
    rows = [{"shift_start": shift.start, "checkpoint": at, "payload": payload, "sent_at_utc": None}
            for at, payload in messages if at not in sent]
    if rows:
        conn.execute(insert(StockMessage), rows)


def unsent(conn: Connection) -> list[tuple[Key, str]]:
    """Every message not yet confirmed, oldest first (a broker outage may have left several shifts')."""
    rows = conn.execute(select(StockMessage.shift_start, StockMessage.checkpoint, StockMessage.payload)
                        .where(StockMessage.sent_at_utc.is_(None)).order_by(StockMessage.checkpoint))
    return [((r.shift_start, r.checkpoint), r.payload) for r in rows]


def mark_sent(conn: Connection, keys: list[Key], now: datetime) -> None:
    if keys:
        conn.execute(update(StockMessage).where(tuple_(StockMessage.shift_start, StockMessage.checkpoint).in_(keys))
                     .values(sent_at_utc=now))


def sent_count(conn: Connection, shift_starts: Iterable[datetime]) -> int:
    """How many of these shifts' stock messages the broker confirmed."""
    return int(conn.scalar(select(func.count()).select_from(StockMessage).where(
        StockMessage.shift_start.in_(list(shift_starts)), StockMessage.sent_at_utc.is_not(None))))
