"""The shop's stock messages of a shift, planned from its opening stock and its movements.

Every ``interval`` of simulated time (and at the shift's end) the shop reports the absolute stock
of the products whose level changed since the last checkpoint, in docs/contracts.md's JSON. Each
message carries its checkpoint and a ``sequence`` derived from it (the same on every re-send), so a
consumer can drop a repeat; a checkpoint with more products than fit under the broker's message
limit goes as several parts, split by product id ranges, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from rossmann_local.domain.shifts import ShiftWindow

Movement = tuple[datetime, int, int]  # (time, product, +units delivered or -units sold)


# Kafka's default message.max.bytes is 1,000,000 (and the bundled broker's); a part stays well under.
MAX_STOCK_MESSAGE_BYTES = 512 * 1024
PART_SEPARATOR = "\n"  # the parts of one checkpoint, stored together in the shop's queue (JSON has no raw newline)


def stock_sequence(checkpoint: datetime) -> int:
    """Minutes since 1970 of the checkpoint: increasing per shop, identical on every re-send."""
    return int(checkpoint.timestamp()) // 60


def stock_message_json(shop_id: int, levels: dict[int, int], checkpoint: datetime, part: int = 1,
                       parts: int = 1) -> str:
    """docs/contracts.md's JSON: ``{"shop_id":"1","checkpoint_utc":"2026-06-01T07:50:00Z","sequence":
    29668670,"part":1,"parts":1,"updated_products":{"3":412,"7":0}}``."""
    return json.dumps({"shop_id": str(shop_id),
                       "checkpoint_utc": checkpoint.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                       "sequence": stock_sequence(checkpoint), "part": part, "parts": parts,
                       "updated_products": {str(p): q for p, q in sorted(levels.items())}},
                      separators=(",", ":"))


def stock_message_parts(shop_id: int, levels: dict[int, int], checkpoint: datetime,
                        limit: int = MAX_STOCK_MESSAGE_BYTES) -> list[str]:
    """The checkpoint's message, or its parts (consecutive product id ranges), each at most ``limit`` bytes."""
    items = sorted(levels.items())
    per_product = max(len(f'"{p}":{q},') for p, q in items) if items else 1
    room = max(1, (limit - 200) // per_product)  # 200 bytes cover every other field
    chunks = [dict(items[i:i + room]) for i in range(0, len(items), room)] or [{}]
    return [stock_message_json(shop_id, chunk, checkpoint, i + 1, len(chunks)) for i, chunk in enumerate(chunks)]


def checkpoints(shift: ShiftWindow, interval_minutes: int) -> list[datetime]:
    """Every ``interval_minutes`` of simulated time from the shift start, and the shift's end."""
    step = timedelta(minutes=interval_minutes)
    times, moment = [], shift.start + step
    while moment < shift.end:
        times.append(moment)
        moment += step
    return [*times, shift.end]


def plan_stock_messages(shop_id: int, shift: ShiftWindow, interval_minutes: int, opening: dict[int, int],
                        movements: Iterable[Movement]) -> list[tuple[datetime, str]]:
    """(checkpoint, JSON parts joined by ``PART_SEPARATOR``) for each checkpoint at which some product's
    stock differs from the last one, rolling the levels forward through the shift's movements (in time order)."""
    messages = []
    levels = dict(opening)
    remaining = iter(movements)
    pending = next(remaining, None)
    for moment in checkpoints(shift, interval_minutes):
        previous = dict(levels)
        while pending is not None and pending[0] < moment:
            _at, product_id, units = pending
            levels[product_id] = levels.get(product_id, 0) + units
            pending = next(remaining, None)
        changed = {pid: qty for pid, qty in levels.items() if previous.get(pid, 0) != qty}
        if changed:
            messages.append((moment, PART_SEPARATOR.join(stock_message_parts(shop_id, changed, moment))))
    return messages
