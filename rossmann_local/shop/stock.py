"""The shop's stock levels to the chain (``oltp_update_product_quantity``, key the shop id).

Messages are planned from the stock ledger (``domain.stock_levels``), queued in the shop database,
and leave the queue only once the broker confirmed them, so a broker outage delays them and
loses none (docs/contracts.md defect 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.stock_levels import plan_stock_messages
from rossmann_local.domain.topics import STOCK_TOPIC
from rossmann_local.domain.world import Shop, World
from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import KAFKA_BOOTSTRAP_SERVERS
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.stock_outbox import Key, mark_sent, queue_shift_messages, unsent


class StockNotDelivered(RuntimeError):
    """Some stock messages were not confirmed; they stay queued in the shop database."""


@dataclass(frozen=True)
class StockLevelsSent:
    planned: int
    sent: int
    sent_from_earlier_shifts: int  # queued by shifts outside this batch (e.g. during a broker outage)
    broker_errors: int


def queue_stock_levels(world: World, shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases) -> int:
    """Plan the shift's stock messages from its opening stock and movements, and queue them (the
    shift's unsent ones are replaced, confirmed ones never sent again); returns how many."""
    with shop_databases.transaction(shop.shop_id) as conn:
        messages = plan_stock_messages(shop.shop_id, shift, world.sales.stock_report_interval_minutes,
                                       ledger.stock_at(conn, shift.start),
                                       ledger.stock_movements(conn, shift.start, shift.end))
        queue_shift_messages(conn, shift, messages)
    return len(messages)


def send_stock_levels(world: World, shifts: Sequence[tuple[Shop, ShiftWindow]], shop_databases: ShopDatabases,
                      kafka: KafkaResource) -> StockLevelsSent:
    """Queue the shifts' stock messages, then send every queue of their shops in order and wait for
    the broker once; mark sent what it confirmed. Raises ``StockNotDelivered`` for the rest."""
    planned = sum(queue_stock_levels(world, shop, shift, shop_databases) for shop, shift in shifts)
    queued: dict[int, list[tuple[Key, str]]] = {}
    for shop_id in dict.fromkeys(shop.shop_id for shop, _ in shifts):
        with shop_databases.transaction(shop_id) as conn:
            queued[shop_id] = unsent(conn)
    outcome = kafka.produce_confirmed(Outgoing(STOCK_TOPIC, payload.encode(), tag=(shop_id, key),
                                               key=str(shop_id).encode())
                                      for shop_id, messages in queued.items() for key, payload in messages)
    confirmed: dict[int, list[Key]] = {shop_id: [] for shop_id in queued}
    for shop_id, key in outcome.confirmed:
        confirmed[shop_id].append(key)
    for shop_id, keys in confirmed.items():
        with shop_databases.transaction(shop_id) as conn:
            mark_sent(conn, keys, datetime.now(UTC))  # bookkeeping, wall clock: when the broker confirmed
    missing = {shop_id: len(queued[shop_id]) - len(keys) for shop_id, keys in confirmed.items()
               if len(keys) < len(queued[shop_id])}
    if missing:
        raise StockNotDelivered(
            f"{sum(missing.values())} of {sum(map(len, queued.values()))} stock messages (shops "
            f"{sorted(missing)}) were not confirmed by Kafka (check {KAFKA_BOOTSTRAP_SERVERS}); they stay "
            f"queued and go with the next run. Broker errors: {outcome.errors[:3]}")
    in_batch = {(shop.shop_id, shift.start) for shop, shift in shifts}
    earlier = sum(1 for shop_id, messages in queued.items() for (start, _), _ in messages
                  if (shop_id, start) not in in_batch)
    return StockLevelsSent(planned, len(outcome.confirmed), earlier, len(outcome.errors))
