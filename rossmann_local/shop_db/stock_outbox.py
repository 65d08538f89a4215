"""The shop's queue of stock messages: planned from the stock ledger at intervals of simulated
time, sent in order, and marked sent only once the broker confirmed them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, tuple_, update

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.shop_db.ledger import stock_at, stock_movements
from rossmann_local.shop_db.models import StockMessage

Key = tuple[datetime, datetime]  # (shift_start, checkpoint)


def stock_message_json(shop_id: int, levels: dict[int, int]) -> str:
    """DOMAIN.md's JSON: ``{"shop_id":"1","updated_products":{"3":412,"7":0}}``."""
    return json.dumps({"shop_id": str(shop_id), "updated_products": {str(p): q for p, q in sorted(levels.items())}},
                      separators=(",", ":"))


def checkpoints(shift: ShiftWindow, interval_minutes: int) -> list[datetime]:
    """Every ``interval_minutes`` of simulated time from the shift start, and the shift's end."""
    step = timedelta(minutes=interval_minutes)
    times, moment = [], shift.start + step
    while moment < shift.end:
        times.append(moment)
        moment += step
    return [*times, shift.end]


def plan_stock_messages(conn: Connection, shop_id: int, shift: ShiftWindow,
                        interval_minutes: int) -> list[tuple[datetime, str]]:
    """(checkpoint, JSON) for each checkpoint at which some product's stock differs from the last one.
    The ledger is read twice per shift (stock at its start, its movements), not once per checkpoint."""
    messages = []
    levels = stock_at(conn, shift.start)
    movements = iter(stock_movements(conn, shift.start, shift.end))
    pending = next(movements, None)
    for moment in checkpoints(shift, interval_minutes):
        previous = dict(levels)
        while pending is not None and pending[0] < moment:
            _at, product_id, units = pending
            levels[product_id] = levels.get(product_id, 0) + units
            pending = next(movements, None)
        changed = {pid: qty for pid, qty in levels.items() if previous.get(pid, 0) != qty}
        if changed:
            messages.append((moment, stock_message_json(shop_id, changed)))
    return messages


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
