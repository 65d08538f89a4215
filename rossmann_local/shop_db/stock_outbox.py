"""The shop's queue of stock messages: queued per shift, sent in order, marked sent only once the
broker confirmed every part, and verified later by reading each part back at the offset the broker
gave it (what goes in the queue is planned by ``domain.stock_levels``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select, tuple_, update

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.stock_levels import PART_SEPARATOR
from rossmann_local.shop_db.models import StockMessage, StockMessageOffset

Key = tuple[datetime, datetime]  # (shift_start, checkpoint)
PartKey = tuple[datetime, datetime, int]  # (shift_start, checkpoint, part from 1)


@dataclass(frozen=True)
class Placed:
    """A part the broker confirmed at ``(partition, offset)``, not yet read back there."""

    part: PartKey
    partition: int
    offset: int
    confirmed_at_utc: datetime


def parts_of(payload: str) -> list[str]:
    return payload.split(PART_SEPARATOR)


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


def unsent_parts(conn: Connection) -> list[tuple[PartKey, str]]:
    """Every part of every message not yet wholly confirmed and not yet placed, oldest first (a broker
    outage may have left several shifts')."""
    unsent = select(StockMessage.shift_start, StockMessage.checkpoint).where(StockMessage.sent_at_utc.is_(None))
    # Only the unsent messages' placed parts: reading every part ever placed grew with the shop's history.
    placed = set(conn.execute(select(StockMessageOffset.shift_start, StockMessageOffset.checkpoint,
                                     StockMessageOffset.part)
                              .where(tuple_(StockMessageOffset.shift_start, StockMessageOffset.checkpoint).in_(unsent))
                              ).tuples())
    rows = conn.execute(select(StockMessage.shift_start, StockMessage.checkpoint, StockMessage.payload)
                        .where(StockMessage.sent_at_utc.is_(None)).order_by(StockMessage.checkpoint))
    return [((r.shift_start, r.checkpoint, number), part)
            for r in rows for number, part in enumerate(parts_of(r.payload), start=1)
            if (r.shift_start, r.checkpoint, number) not in placed]


def payloads(conn: Connection, keys: Iterable[Key]) -> dict[Key, list[str]]:
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(select(StockMessage.shift_start, StockMessage.checkpoint, StockMessage.payload)
                        .where(tuple_(StockMessage.shift_start, StockMessage.checkpoint).in_(wanted)))
    return {(r.shift_start, r.checkpoint): parts_of(r.payload) for r in rows}


def record_placed(conn: Connection, placed: dict[PartKey, tuple[int, int]], now: datetime) -> None:
    """Record where the broker put these parts, and mark sent the messages whose every part is placed."""
    if not placed:
        return
    conn.execute(delete(StockMessageOffset).where(tuple_(
        StockMessageOffset.shift_start, StockMessageOffset.checkpoint, StockMessageOffset.part).in_(list(placed))))
    conn.execute(insert(StockMessageOffset), [
        {"shift_start": s, "checkpoint": c, "part": n, "topic_partition": partition, "topic_offset": offset,
         "confirmed_at_utc": now, "verified_at_utc": None} for (s, c, n), (partition, offset) in placed.items()])
    keys = list({(s, c) for s, c, _ in placed})
    counts = dict(((r.shift_start, r.checkpoint), r.n) for r in conn.execute(
        select(StockMessageOffset.shift_start, StockMessageOffset.checkpoint, func.count().label("n"))
        .where(tuple_(StockMessageOffset.shift_start, StockMessageOffset.checkpoint).in_(keys))
        .group_by(StockMessageOffset.shift_start, StockMessageOffset.checkpoint)))
    complete = [key for key, parts in payloads(conn, keys).items() if counts.get(key, 0) == len(parts)]
    if complete:
        conn.execute(update(StockMessage).where(tuple_(StockMessage.shift_start, StockMessage.checkpoint)
                                                .in_(complete)).values(sent_at_utc=now))


def unverified(conn: Connection) -> list[Placed]:
    o = StockMessageOffset
    rows = conn.execute(select(o.shift_start, o.checkpoint, o.part, o.topic_partition, o.topic_offset,
                               o.confirmed_at_utc).where(o.verified_at_utc.is_(None)))
    return [Placed((r.shift_start, r.checkpoint, r.part), r.topic_partition, r.topic_offset, r.confirmed_at_utc)
            for r in rows]


def newest_unverified_confirmation(conn: Connection) -> datetime | None:
    return conn.scalar(select(func.max(StockMessageOffset.confirmed_at_utc))
                       .where(StockMessageOffset.verified_at_utc.is_(None)))


def last_verified_offsets(conn: Connection) -> dict[int, int]:
    """Per topic partition, the highest offset read back for this shop (where the next check starts)."""
    rows = conn.execute(select(StockMessageOffset.topic_partition, func.max(StockMessageOffset.topic_offset))
                        .where(StockMessageOffset.verified_at_utc.is_not(None))
                        .group_by(StockMessageOffset.topic_partition))
    return {partition: offset for partition, offset in rows.tuples()}


def mark_verified(conn: Connection, parts: list[PartKey], now: datetime) -> None:
    if parts:
        conn.execute(update(StockMessageOffset).where(tuple_(
            StockMessageOffset.shift_start, StockMessageOffset.checkpoint, StockMessageOffset.part).in_(parts))
            .values(verified_at_utc=now))


def forget_lost(conn: Connection, parts: list[PartKey]) -> None:
    """Parts confirmed once and no longer on the topic: back to the queue, to be sent again."""
    if not parts:
        return
    conn.execute(delete(StockMessageOffset).where(tuple_(
        StockMessageOffset.shift_start, StockMessageOffset.checkpoint, StockMessageOffset.part).in_(parts)))
    conn.execute(update(StockMessage).where(tuple_(StockMessage.shift_start, StockMessage.checkpoint)
                                            .in_(list({(s, c) for s, c, _ in parts}))).values(sent_at_utc=None))


def sent_count(conn: Connection, shift_starts: Iterable[datetime]) -> int:
    """How many of these shifts' stock messages the broker confirmed."""
    return int(conn.scalar(select(func.count()).select_from(StockMessage).where(
        StockMessage.shift_start.in_(list(shift_starts)), StockMessage.sent_at_utc.is_not(None))))


def verified_count(conn: Connection, shift_starts: Iterable[datetime]) -> int:
    """How many of these shifts' stock messages were read back, every part, where the broker put them."""
    starts = list(shift_starts)
    unread = select(StockMessageOffset.shift_start, StockMessageOffset.checkpoint).where(
        StockMessageOffset.shift_start.in_(starts), StockMessageOffset.verified_at_utc.is_(None))
    return int(conn.scalar(select(func.count()).select_from(StockMessage).where(
        StockMessage.shift_start.in_(starts), StockMessage.sent_at_utc.is_not(None),
        ~tuple_(StockMessage.shift_start, StockMessage.checkpoint).in_(unread))))

