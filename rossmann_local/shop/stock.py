"""The shop's stock levels to the chain (``oltp_update_product_quantity``, key the shop id).

Messages are planned from the stock ledger (``domain.stock_levels``), queued in the shop database,
and leave the queue only once the broker confirmed them, so a broker outage delays them and
loses none (docs/contracts.md defect 5). Each confirmed part is later read back at the offset the
broker gave it: what a broker lost after confirming is sent again, and what was sent but never
recorded (a crash after the send) is found on the topic and not sent twice.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rossmann_local.domain.provenance import Provenance
from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.stock_levels import plan_stock_messages, stock_sequence
from rossmann_local.domain.topics import STOCK_TOPIC
from rossmann_local.domain.world import Shop, World
from rossmann_local.resources.kafka import (
    SETTLE_SECONDS,
    Confirmations,
    KafkaResource,
    Outgoing,
    wait_until_settled,
)
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import ConfigError
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.stock_outbox import (
    PartKey,
    forget_lost,
    last_verified_offsets,
    mark_verified,
    newest_unverified_confirmation,
    payloads,
    queue_shift_messages,
    record_placed,
    unsent_parts,
    unverified,
)


class StockNotDelivered(RuntimeError):
    """Some stock messages were not confirmed; they stay queued in the shop database."""




@dataclass(frozen=True)
class StockLevelsSent:
    # (shop id, shift start) -> (messages planned, messages confirmed) for each shift of the batch
    per_shift: dict[tuple[int, datetime], tuple[int, int]]
    sent_from_earlier_shifts: int  # queued by shifts outside this batch (e.g. during a broker outage)
    broker_errors: int
    verified: int = 0  # parts read back where the broker put them
    lost_and_resent: int = 0  # parts confirmed once, missing from the topic later, sent again
    found_on_topic: int = 0  # parts already on the topic though not recorded (a crash after the send)


@dataclass(frozen=True)
class Reconciled:
    verified: int
    lost: int
    found: int
    lost_by_shop: dict[int, int] = field(default_factory=dict)


def queue_stock_levels(world: World, shop: Shop, shift: ShiftWindow, shop_databases: ShopDatabases,
                       until: datetime | None = None) -> int:
    """Plan the shift's stock messages from its opening stock and movements, and queue them (the
    shift's unsent ones are replaced, confirmed ones never sent again); returns how many. With
    ``until`` (live mode, the receipts before it written), only the checkpoints at or before it: each
    covers the movements before its time, so it is already final."""
    return queue_shifts_stock_levels(world, shop, [shift], shop_databases, until)[shift.start]


def queue_shifts_stock_levels(world: World, shop: Shop, shifts: Iterable[ShiftWindow],
                              shop_databases: ShopDatabases, until: datetime | None = None) -> dict[datetime, int]:
    """``queue_stock_levels`` for many shifts of one shop, in one transaction: the first shift's
    opening stock is read from the ledger, each next one's is rolled forward through the movements
    in between. Reading each from the ledger costs the movements after it, i.e. the rest of the run
    when every shift of a long run is sold before its stock is sent: quadratic in the run's length."""
    queued: dict[datetime, int] = {}
    ordered = sorted({s.start: s for s in shifts}.values(), key=lambda s: s.start)
    if not ordered:
        return queued
    interval = world.sales.stock_report_interval_minutes
    with shop_databases.transaction(shop.shop_id) as conn:
        opening = ledger.stock_at(conn, ordered[0].start)
        for shift, following in zip(ordered, [*ordered[1:], None], strict=True):
            until = shift.end if following is None else max(shift.end, following.start)
            movements = ledger.stock_movements(conn, shift.start, until)
            messages = plan_stock_messages(shop.shop_id, shift, interval, opening, movements)
            if until is not None:
                messages = [(at, payload) for at, payload in messages if at <= until]
            queue_shift_messages(conn, shift, messages)
            queued[shift.start] = len(messages)
            for _at, product_id, units in movements:
                opening[product_id] = opening.get(product_id, 0) + units
            opening = {pid: units for pid, units in opening.items() if units}
    return queued


def _identity(value: bytes | None) -> tuple[str, int, int] | None:
    """(shop id, sequence, part) of a stock message read from the topic, None for anything else."""
    try:
        body = json.loads(value or b"")
        return str(body["shop_id"]), int(body["sequence"]), int(body["part"])
    except (ValueError, KeyError, TypeError):
        return None


def reconcile(shop_ids: Iterable[int], shop_databases: ShopDatabases, kafka: KafkaResource,
              settle_seconds: float = SETTLE_SECONDS) -> Reconciled:
    """Read the stock topic back from each shop's last verified point: a part confirmed at least
    ``settle_seconds`` ago and found at its offset is verified; one missing there goes back to the
    queue; a queued part already on the topic (sent, then the process died before recording it) is
    recorded where it is, not sent twice."""
    now = datetime.now(UTC)  # bookkeeping, wall clock: the broker's durability is a wall-clock matter
    states = {}
    for shop_id in shop_ids:
        with shop_databases.transaction(shop_id) as conn:
            states[shop_id] = (unverified(conn), unsent_parts(conn), last_verified_offsets(conn))
    if not any(placed or pending for placed, pending, _ in states.values()):
        return Reconciled(0, 0, 0)
    on_topic: dict[tuple[int, int], bytes | None] = {}
    by_identity: dict[tuple[str, int, int], tuple[int, int, bytes | None]] = {}
    try:
        partitions = kafka.partitions(STOCK_TOPIC)
        with kafka.consumer() as consumer:
            ends = {p: kafka.watermarks(consumer, STOCK_TOPIC, p) for p in range(partitions)}
    except ConfigError:
        return Reconciled(0, 0, 0)  # the broker is away: the send that follows fails and says so
    for partition, (low, high) in ends.items():
        starts = [high]
        for placed, pending, verified in states.values():
            starts += [p.offset for p in placed if p.partition == partition]
            if pending:
                starts.append(verified[partition] + 1 if partition in verified else low)
        start = min(starts)
        start = low if start > high or start < low else start
        for message in kafka.read_range(STOCK_TOPIC, partition, start, high):
            on_topic[(partition, message.offset)] = message.value
            identity = _identity(message.value)
            if identity is not None:
                by_identity.setdefault(identity, (partition, message.offset, message.value))
    verified_total = lost_total = found_total = 0
    lost_by_shop = {}
    for shop_id, (placed, pending, _) in states.items():
        with shop_databases.transaction(shop_id) as conn:
            messages = payloads(conn, [(p.part[0], p.part[1]) for p in placed])
            kept, lost = [], []
            for p in placed:
                expected = messages.get(p.part[:2], [])
                part_text = expected[p.part[2] - 1] if len(expected) >= p.part[2] else None
                if part_text is None or on_topic.get((p.partition, p.offset)) != part_text.encode():
                    lost.append(p.part)
                elif (now - p.confirmed_at_utc).total_seconds() >= settle_seconds:
                    kept.append(p.part)
            found = {}
            for part_key, text in pending:
                hit = by_identity.get((str(shop_id), stock_sequence(part_key[1]), part_key[2]))
                if hit is not None and hit[2] == text.encode():
                    found[part_key] = (hit[0], hit[1])
            mark_verified(conn, kept, now)
            forget_lost(conn, lost)
            record_placed(conn, found, now)
        verified_total += len(kept)
        lost_total += len(lost)
        lost_by_shop[shop_id] = len(lost)
        found_total += len(found)
    return Reconciled(verified_total, lost_total, found_total, lost_by_shop)


def deliver_queued(shop_ids: Iterable[int], shop_databases: ShopDatabases, kafka: KafkaResource,
                   provenance: Provenance, settle_seconds: float = SETTLE_SECONDS
                   ) -> tuple[Reconciled, Confirmations[tuple[int, PartKey]], dict[int, int]]:
    """Reconcile with the topic, then send every queued part of these shops in order and wait for the
    broker once; record where it put what it confirmed. Returns the reconciliation, the broker's
    confirmations and how many parts each shop had queued. Each part's headers name its shop and
    its checkpoint's simulated time."""
    shop_ids = list(dict.fromkeys(shop_ids))
    checked = reconcile(shop_ids, shop_databases, kafka, settle_seconds)
    queued: dict[int, list[tuple[PartKey, str]]] = {}
    for shop_id in shop_ids:
        with shop_databases.transaction(shop_id) as conn:
            queued[shop_id] = unsent_parts(conn)
    outcome = kafka.produce_confirmed(Outgoing(STOCK_TOPIC, text.encode(), tag=(shop_id, part_key),
                                               key=str(shop_id).encode(),
                                               headers=provenance.headers(f"shop {shop_id}", part_key[1]))
                                      for shop_id, parts in queued.items() for part_key, text in parts)
    placed: dict[int, dict[PartKey, tuple[int, int]]] = {shop_id: {} for shop_id in queued}
    for shop_id, part_key in outcome.confirmed:
        placed[shop_id][part_key] = outcome.placed[(shop_id, part_key)]
    for shop_id, parts in placed.items():
        with shop_databases.transaction(shop_id) as conn:
            record_placed(conn, parts, datetime.now(UTC))  # bookkeeping, wall clock: when the broker confirmed
    return checked, outcome, {shop_id: len(parts) for shop_id, parts in queued.items()}


def send_stock_levels(world: World, shifts: Sequence[tuple[Shop, ShiftWindow]], shop_databases: ShopDatabases,
                      kafka: KafkaResource, provenance: Provenance) -> StockLevelsSent:
    """Queue the shifts' stock messages, then deliver every queue of their shops (``deliver_queued``).
    Raises ``StockNotDelivered`` for what the broker did not confirm."""
    per_shop: dict[int, tuple[Shop, list[ShiftWindow]]] = {}
    for shop, shift in shifts:
        per_shop.setdefault(shop.shop_id, (shop, []))[1].append(shift)
    planned_per_shift = {(shop_id, start): count for shop_id, (shop, its_shifts) in per_shop.items()
                         for start, count in queue_shifts_stock_levels(world, shop, its_shifts,
                                                                       shop_databases).items()}
    checked, outcome, queued = deliver_queued([shop.shop_id for shop, _ in shifts], shop_databases, kafka,
                                              provenance)
    confirmed = Counter(shop_id for shop_id, _ in outcome.confirmed)
    missing = {shop_id: count - confirmed[shop_id] for shop_id, count in queued.items() if confirmed[shop_id] < count}
    if missing:
        raise StockNotDelivered(
            f"{sum(missing.values())} of {sum(queued.values())} stock message parts (shops "
            f"{sorted(missing)}) were not confirmed by Kafka at {kafka.describe()}; they stay "
            f"queued and go with the next run. Broker errors: {outcome.errors[:3]}")
    messages = {(shop_id, part_key[:2]) for shop_id, part_key in outcome.confirmed}
    sent_per_shift = Counter((shop_id, message[0]) for shop_id, message in messages)
    earlier = sum(count for shift, count in sent_per_shift.items() if shift not in planned_per_shift)
    return StockLevelsSent({shift: (planned, sent_per_shift[shift]) for shift, planned in planned_per_shift.items()},
                           earlier, len(outcome.errors), checked.verified, checked.lost, checked.found)


def settle_and_verify(shop_ids: Iterable[int], shop_databases: ShopDatabases, kafka: KafkaResource,
                      provenance: Provenance, settle_seconds: float = SETTLE_SECONDS) -> Reconciled:
    """Wait until the last confirmation is ``settle_seconds`` old, then reconcile and re-send what was
    lost (the main command's last step, so its summary counts what the topic holds)."""
    shop_ids = list(shop_ids)
    newest = []
    for shop_id in shop_ids:
        with shop_databases.transaction(shop_id) as conn:
            newest.append(newest_unverified_confirmation(conn))
    wait_until_settled(max(filter(None, newest), default=None), settle_seconds)
    checked, outcome, _ = deliver_queued(shop_ids, shop_databases, kafka, provenance, settle_seconds)
    if outcome.sent:
        time.sleep(settle_seconds)
        again = reconcile(shop_ids, shop_databases, kafka, settle_seconds)
        lost = {shop: checked.lost_by_shop.get(shop, 0) + again.lost_by_shop.get(shop, 0) for shop in shop_ids}
        return Reconciled(checked.verified + again.verified, checked.lost + again.lost, checked.found + again.found,
                          lost)
    return checked
