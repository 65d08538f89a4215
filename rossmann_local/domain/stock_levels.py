"""The shop's stock messages of a shift, planned from its opening stock and its movements.

Every ``interval`` of simulated time (and at the shift's end) the shop reports the absolute stock
of the products whose level changed since the last checkpoint, in docs/contracts.md's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta

from rossmann_local.domain.shifts import ShiftWindow

Movement = tuple[datetime, int, int]  # (time, product, +units delivered or -units sold)


def stock_message_json(shop_id: int, levels: dict[int, int]) -> str:
    """docs/contracts.md's JSON: ``{"shop_id":"1","updated_products":{"3":412,"7":0}}``."""
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


def plan_stock_messages(shop_id: int, shift: ShiftWindow, interval_minutes: int, opening: dict[int, int],
                        movements: Iterable[Movement]) -> list[tuple[datetime, str]]:
    """(checkpoint, JSON) for each checkpoint at which some product's stock differs from the last one,
    rolling the levels forward through the shift's movements (in time order)."""
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
            messages.append((moment, stock_message_json(shop_id, changed)))
    return messages
