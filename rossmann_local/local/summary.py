"""The main command's summary: what the shop databases hold, what ClickHouse's reports say beside
them, and what streaming did, read back after the day and printed as plain-text tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.world import World
from rossmann_local.reports.analytics import (
    naive_revenue_per_shop_per_day,
    revenue_per_shop_per_day,
    shifts_delivery_totals,
)
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import ConfigError
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.history import shelf_at
from rossmann_local.shop_db.stock_outbox import sent_count, verified_count


@dataclass
class ShopDay:
    shop_id: int
    city: str
    runs_ok: int = 0
    runs_failed: list[str] = field(default_factory=list)
    receipts: int = 0
    lines: int = 0
    units_sold: int = 0
    revenue: Decimal = Decimal("0")
    units_delivered: int = 0
    stock_units: int = 0
    sold_out: int = 0
    reported_receipts: int = 0
    reported_revenue: Decimal = Decimal("0")
    reported_units_delivered: int = 0
    naive_revenue: Decimal = Decimal("0")
    stock_messages_sent: int = 0
    stock_messages_on_topic: int = 0  # read back where the broker put them, every part
    stock_parts_resent: int = 0  # lost by the broker after it confirmed them, sent again
    shifts_sold_again: int = 0  # after a late catalogue version fell into them

    @property
    def reports_match(self) -> bool:
        return (self.reported_receipts, self.reported_revenue, self.reported_units_delivered) == (
            self.receipts, self.revenue, self.units_delivered)


@dataclass
class Streaming:
    """What the day's catalogue changes and stock messages did."""

    changes_published: int = 0
    promotion_prices: list[str] = field(default_factory=list)  # what the receipts charged before and after
    upsert_runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    outcome: Counter[str] = field(default_factory=Counter)
    # Each sold (shop, shift start) a late version fell into, once however many upsert runs found it.
    sold_shifts_touched: set[tuple[int, str]] = field(default_factory=set)
    scenario: str = ""  # the scenario's name and seed, when one ran
    scenario_faults: int = 0  # its faults delivered on the stream
    ledger_counts: dict[str, int] = field(default_factory=dict)  # the day's ledger, per kind
    ledger_table: str = ""
    expected: str = ""  # the expected answers' check on the reports
    expected_passed: bool = False
    not_applied: list[str] = field(default_factory=list)  # a scenario's faults this stack cannot inject
    applied: list[str] = field(default_factory=list)  # what the outages did


def _read_shop_day(shop_databases: ShopDatabases, shifts: list[ShiftWindow], shop_day: ShopDay) -> None:
    with shop_databases.transaction(shop_day.shop_id) as conn:
        for shift in shifts:
            totals = ledger.shift_totals(conn, shift)
            shop_day.receipts += int(totals["receipts"])
            shop_day.lines += int(totals["lines"])
            shop_day.units_sold += int(totals["units"])
            shop_day.revenue += Decimal(totals["revenue"])
            shop_day.units_delivered += ledger.shift_delivery_totals(conn, shift)["units"]
        on_sale = [p.product_id for p in shelf_at(conn, shifts[-1].end)]
        shop_day.stock_units, shop_day.sold_out = ledger.shelf_stock(conn, shifts[-1].end, on_sale)
        shop_day.stock_messages_sent = sent_count(conn, (s.start for s in shifts))
        shop_day.stock_messages_on_topic = verified_count(conn, (s.start for s in shifts))


def read_shop_days(world: World, shop_databases: ShopDatabases, clickhouse: ClickHouseReports, day: date,
                   shifts: list[ShiftWindow], days: dict[int, ShopDay]) -> None:
    """Fill in each shop's day from its database, and from ClickHouse what analytics sees. A shop
    whose database cannot be read counts as failed; the others are still summed."""
    for shop_day in days.values():
        try:
            _read_shop_day(shop_databases, shifts, shop_day)
        except (ConfigError, SQLAlchemyError) as exc:
            shop_day.runs_failed.append(f"summary: shop {shop_day.shop_id}'s database: {str(exc).splitlines()[0]}")
    shop_databases.dispose()
    with clickhouse.client() as client:
        for row in revenue_per_shop_per_day(client, world.timezone, day, day):
            days[row.shop_id].reported_receipts = row.receipts
            days[row.shop_id].reported_revenue = row.revenue
        for row in naive_revenue_per_shop_per_day(client, world.timezone, day, day):
            days[row.shop_id].naive_revenue = row.revenue
        delivered = shifts_delivery_totals(client, [(shop_id, s.start) for shop_id in days for s in shifts])
        for (shop_id, _start), totals in delivered.items():
            days[shop_id].reported_units_delivered += totals["units"]


def render_table(header: tuple[str, ...], rows: list[tuple[str, ...]], total: tuple[str, ...],
                 text_columns: int = 2) -> list[str]:
    """A plain-text table: text columns left-aligned, figures right-aligned, a total row under a rule."""
    widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        padded = (c.ljust(w) if i < text_columns else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    rule = line(tuple("-" * w for w in widths))
    return [line(header), rule, *map(line, rows), rule, line(total)]


def _sum(days: list[ShopDay], name: str) -> Any:
    return sum(getattr(d, name) for d in days)


def format_summary(day: date, shop_days: list[ShopDay], seconds: float, clickhouse_dsn: str,
                   streaming: Streaming) -> str:
    def shop_row(shop: str, city: str, days: list[ShopDay]) -> tuple[str, ...]:
        runs = _sum(days, "runs_ok")
        return (shop, city, f"{runs}/{runs + sum(len(d.runs_failed) for d in days)}",
                *(str(_sum(days, f)) for f in ("receipts", "lines", "units_sold")), f"{_sum(days, 'revenue'):,.2f}",
                *(str(_sum(days, f)) for f in ("units_delivered", "stock_units", "sold_out")))

    def report_row(shop: str, days: list[ShopDay]) -> tuple[str, ...]:
        return (shop, str(_sum(days, "receipts")), str(_sum(days, "reported_receipts")),
                f"{_sum(days, 'revenue'):,.2f}", f"{_sum(days, 'reported_revenue'):,.2f}",
                str(_sum(days, "units_delivered")), str(_sum(days, "reported_units_delivered")),
                "yes" if all(d.reports_match for d in days) else "NO", f"{_sum(days, 'naive_revenue'):,.2f}")

    out = [f"Simulated day {day.isoformat()}: {len(shop_days)} shops, {seconds:.1f} s", ""]
    out += render_table(("shop", "city", "shifts", "receipts", "lines", "units sold", "revenue EUR", "units delivered",
                         "stock at close", "sold out"),
                        [shop_row(str(d.shop_id), d.city, [d]) for d in shop_days], shop_row("all", "", shop_days))
    out += ["", f"Reports in ClickHouse ({clickhouse_dsn}) against the shop databases:", ""]
    out += render_table(("shop", "receipts db", "receipts ch", "revenue db", "revenue ch", "delivered db",
                         "delivered ch", "match", "per-line sum (wrong)"),
                        [report_row(str(d.shop_id), [d]) for d in shop_days], report_row("all", shop_days),
                        text_columns=1)
    out.append("(revenue ch counts each receipt once; summing transaction_total_amount per line over-counts)")
    o = streaming.outcome
    out += ["", "Streaming (Kafka):",
            f"  catalogue changes published by the chain: {streaming.changes_published} "
            + (f"(+{streaming.scenario_faults} faulty messages of the scenario)" if streaming.scenario
               else "(+1 malformed message injected by the demo)"),
            f"  upsert runs requested by the sensor: {streaming.upsert_runs}, over {o['messages']} messages",
            f"  messages applied: {o['applied']}, skipped as stale: {o['skipped_as_stale']}, "
            f"dead-lettered: {o['dead_lettered']}, price without city: {o['price_without_city']} "
            f"(shop rows changed: {o['rows_changed']})",
            f"  catalogue versions added to the shops' history: {o['versions_added']}, late for shifts already "
            f"sold: {len(streaming.sold_shifts_touched)}"
            + (f" (shop x shifts sold again: {_sum(shop_days, 'shifts_sold_again')})"
               if _sum(shop_days, 'shifts_sold_again') else ""),
            f"  stock messages (oltp_update_product_quantity): {_sum(shop_days, 'stock_messages_sent')} confirmed, "
            f"{_sum(shop_days, 'stock_messages_on_topic')} read back on the topic where the broker put them"
            + (f", {_sum(shop_days, 'stock_parts_resent')} lost by the broker after confirming and sent again"
               if _sum(shop_days, 'stock_parts_resent') else ""),
            *streaming.promotion_prices]
    if streaming.expected:
        out += ["", f"Expected answers (shop_reports.expected_shop_day, simulated from the Sync API's catalogue "
                    f"and the world): {streaming.expected}"]
    if streaming.scenario:
        counts = ", ".join(f"{kind} {n}" for kind, n in streaming.ledger_counts.items())
        out += ["", f"Scenario {streaming.scenario}: the day's ledger ({streaming.ledger_table}): {counts}"]
        out += [f"  {what}" for what in streaming.applied]
        out += [f"  not applied: {what}" for what in streaming.not_applied]
    out += [f"FAILED upsert run {failure}" for failure in streaming.failed_runs]
    out += [f"FAILED {failure}" for failure in dict.fromkeys(f for d in shop_days for f in d.runs_failed)]
    return "\n".join(out)
