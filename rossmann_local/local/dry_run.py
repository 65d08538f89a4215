"""``make day ARGS=--dry-run``: a sample of each stream and table the day writes, simulated in memory;
nothing is started (no broker, Sync API, Dagster) and nothing is written anywhere.

The shop's shifts are simulated from the world's first day (so the day opens with the stock the days
before it leave) at the world's configured catalogue; the real day sells at the catalogue the Sync API
holds, which the day's changes (listed first) and earlier days' change from their times on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from zoneinfo import ZoneInfo

from rossmann_local.domain.catalogue_changes import CatalogueChange, PriceChange
from rossmann_local.domain.provenance import Provenance
from rossmann_local.domain.scenario import Scenario, day_changes
from rossmann_local.domain.simulation import ShiftSimulated, configured_shelf, simulate_shifts
from rossmann_local.domain.stock_levels import PART_SEPARATOR, Movement, plan_stock_messages
from rossmann_local.domain.topics import STOCK_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.local.summary import render_table
from rossmann_local.shop.expected_answers import shifts_through

SAMPLE = 3  # rows of each table, messages of each stream


def _sample(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]], text_columns: int = 0) -> list[str]:
    shown = list(rows[:SAMPLE])
    table = render_table(header, shown, tuple("" for _ in header), text_columns)[:-2]  # no total row
    return ["", f"{title}: {len(shown)} of {len(rows)}", *table]


def _change(change: CatalogueChange, zone: ZoneInfo) -> tuple[str, ...]:
    what = (f"price {change.price} discount {change.discount} in {change.city}" if isinstance(change, PriceChange)
            else ", ".join(f"{k} {v!r}" for k, v in vars(change).items() if k not in ("at", "product_id",
                                                                                         "category_id")))
    return change.topic, change.key, f"{change.at.astimezone(zone):%Y-%m-%d %H:%M}", what


def dry_run(world: World, day: date, scenario: Scenario | None) -> str:
    """The preview as text (see the module's docstring)."""
    zone = ZoneInfo(world.timezone)
    shop = world.shops[0]
    shelf = configured_shelf(world, shop.city)
    simulated: list[ShiftSimulated] = []
    opening: dict[int, int] = {}  # the stock the days before leave
    for shift in simulate_shifts(world, shop, shifts_through(world, day), lambda _shift: shelf):
        if shift.shift.local_date == day:
            simulated.append(shift)
        else:
            opening = {p: u for p, u in shift.sales.closing_stock.items() if u}
    receipts = [r for s in simulated for r in s.sales.receipts]
    deliveries = [d for s in simulated for d in s.deliveries]
    provenance = Provenance.of(world, scenario.name if scenario is not None else None)
    out = [f"Dry run of {day} (nothing started, nothing written): a sample of each stream and table, shop "
           f"{shop.shop_id} ({shop.city}) of {len(world.shops)}, at the world's configured catalogue; "
           f"scenario: {scenario.name if scenario is not None else 'none'}."]
    out += _sample("Kafka: the chain's catalogue changes of the day (the Sync API's outbox)",
                   ("topic", "key", "in effect from", "change"),
                   [_change(c, zone) for c in day_changes(scenario, world, day)], text_columns=4)
    out += _sample("Shop database: transactions", ("transaction_id", "terminal", "cashier", "time", "amount",
                                                   "loyalty", "total", "payment"),
                   [(str(r.transaction_id), str(r.terminal_id), str(r.cashier_id),
                     f"{r.transaction_time.astimezone(zone):%H:%M:%S}", str(r.amount), str(r.loyalty_discount),
                     str(r.total_amount), r.payment_method) for r in receipts])
    out += _sample("Shop database: transaction_items", ("item_id", "transaction_id", "product", "quantity",
                                                        "unit_price", "name at sale time"),
                   [(str(line.item_id), str(r.transaction_id), str(line.product_id), str(line.quantity),
                     str(line.unit_price), line.product_name) for r in receipts for line in r.lines])
    out += _sample("Shop database: deliveries and delivery_items", ("delivery_id", "accepted", "product",
                                                                    "quantity", "name"),
                   [(str(d.delivery_id), f"{d.accepted_time.astimezone(zone):%H:%M}", str(line.product_id),
                     str(line.quantity), line.product_name) for d in deliveries for line in d.lines])
    messages = []
    for shift in simulated:
        movements = _movements(shift)
        for at, payload in plan_stock_messages(shop.shop_id, shift.shift, world.sales.stock_report_interval_minutes,
                                               opening, movements):
            messages += [(at, part) for part in payload.split(PART_SEPARATOR)]
        opening = {p: u for p, u in shift.sales.closing_stock.items() if u}
    out += ["", f"Kafka: {STOCK_TOPIC}, key {str(shop.shop_id).encode()!r}: {min(SAMPLE, len(messages))} of "
                f"{len(messages)}"]
    out += [f"  {payload}" for _at, payload in messages[:SAMPLE]]
    if messages:
        headers = {k: v.decode() for k, v in provenance.headers(f"shop {shop.shop_id}", messages[0][0])}
        out += [f"  headers of the first: {json.dumps(headers)}"]
    out += ["", f"ClickHouse: shop_reports.transactions gets one row per receipt line "
                f"({sum(len(r.lines) for r in receipts)} for this shop's day), shop_reports.delivery one per "
                f"delivered product ({sum(len(d.lines) for d in deliveries)}); docs/contracts.md has the columns."]
    return "\n".join(out)


def _movements(shift: ShiftSimulated) -> list[Movement]:
    """The shift's changes of stock, (time, product, +delivered or -sold), in the ledger's order."""
    delivered = [(d.accepted_time, line.product_id, line.quantity) for d in shift.deliveries for line in d.lines]
    sold = [(r.transaction_time, line.product_id, -line.quantity) for r in shift.sales.receipts for line in r.lines]
    return sorted(delivered + sold)
