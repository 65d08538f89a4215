"""Queries over ``shop_reports`` that count each receipt once.

``transaction_total_amount`` is the receipt's total, repeated on every one of its lines. Summing
it per line counts a receipt with n lines n times: the reference dashboards' revenue bug (docs/contracts.md
defect 9). Take it once per receipt (``GROUP BY transaction_id``) before adding receipts up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from rossmann_local.reports.schema import DATABASE, DELIVERY, TRANSACTIONS

# Revenue per shop per local day, each receipt counted once.
REVENUE_PER_SHOP_PER_DAY = f"""
SELECT shop_id, day, count() AS receipts, round(sum(receipt_total), 2) AS revenue
FROM (
    SELECT shop_id, transaction_id,
           toDate(any(transaction_time), {{timezone:String}}) AS day,
           any(transaction_total_amount) AS receipt_total
    FROM {DATABASE}.{TRANSACTIONS}
    GROUP BY shop_id, transaction_id
)
WHERE day BETWEEN {{first_day:Date}} AND {{last_day:Date}}
GROUP BY shop_id, day
ORDER BY shop_id, day
"""

# The reference's dashboards' query, kept to show the difference: a receipt with n lines counts n times.
NAIVE_REVENUE_PER_SHOP_PER_DAY = f"""
SELECT shop_id, toDate(transaction_time, {{timezone:String}}) AS day, uniqExact(transaction_id) AS receipts,
       round(sum(transaction_total_amount), 2) AS revenue
FROM {DATABASE}.{TRANSACTIONS}
WHERE day BETWEEN {{first_day:Date}} AND {{last_day:Date}}
GROUP BY shop_id, day
ORDER BY shop_id, day
"""

# Totals per shop x shift of the given shops in a range of shifts: one query reconciles a whole run.
SHIFT_WHERE = ("shop_id IN {shop_ids:Array(UInt32)} "
               "AND shift_start BETWEEN {first:DateTime('UTC')} AND {last:DateTime('UTC')}")

SHIFT_TRANSACTIONS_TOTALS = f"""
SELECT shop_id, shift_start, count() AS receipts, sum(lines) AS lines, sum(units) AS units,
       round(sum(receipt_total), 2) AS revenue
FROM (
    SELECT shop_id, shift_start, transaction_id, count() AS lines, sum(quantity) AS units,
           any(transaction_total_amount) AS receipt_total
    FROM {DATABASE}.{TRANSACTIONS}
    WHERE {SHIFT_WHERE}
    GROUP BY shop_id, shift_start, transaction_id
)
GROUP BY shop_id, shift_start
"""

SHIFT_DELIVERY_TOTALS = f"""
SELECT shop_id, shift_start, count() AS lines, sum(quantity) AS units
FROM {DATABASE}.{DELIVERY}
WHERE {SHIFT_WHERE}
GROUP BY shop_id, shift_start
"""

ShiftKey = tuple[int, datetime]


@dataclass(frozen=True)
class DailyRevenue:
    shop_id: int
    day: date
    receipts: int
    revenue: Decimal


def revenue_per_shop_per_day(client: Client, timezone: str, first_day: date, last_day: date) -> list[DailyRevenue]:
    """Revenue and receipts per shop per local day, each receipt counted once."""
    return _daily(client, REVENUE_PER_SHOP_PER_DAY, timezone, first_day, last_day)


def naive_revenue_per_shop_per_day(client: Client, timezone: str, first_day: date,
                                   last_day: date) -> list[DailyRevenue]:
    """The over-counting per-line sum, for comparison only."""
    return _daily(client, NAIVE_REVENUE_PER_SHOP_PER_DAY, timezone, first_day, last_day)


def _daily(client: Client, sql: str, timezone: str, first_day: date, last_day: date) -> list[DailyRevenue]:
    rows = client.query(sql, parameters={"timezone": timezone, "first_day": first_day, "last_day": last_day})
    return [DailyRevenue(int(shop), day, int(receipts), _cents(revenue))
            for shop, day, receipts, revenue in rows.result_rows]


def shift_range_parameters(keys: Sequence[ShiftKey]) -> dict[str, object]:
    """The parameters of SHIFT_WHERE that cover these shop x shifts."""
    return {"shop_ids": sorted({shop for shop, _ in keys}), "first": min(start for _, start in keys),
            "last": max(start for _, start in keys)}


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def shifts_transactions_totals(client: Client, keys: Sequence[ShiftKey]) -> dict[ShiftKey, dict[str, int | Decimal]]:
    """Receipts, lines, units and revenue per shop x shift in the report (what the shop DBs must match)."""
    found = {(int(shop), _utc(start)): {"receipts": int(receipts), "lines": int(lines), "units": int(units),
                                         "revenue": _cents(revenue)}
             for shop, start, receipts, lines, units, revenue in client.query(
                 SHIFT_TRANSACTIONS_TOTALS, parameters=shift_range_parameters(keys)).result_rows}
    empty = {"receipts": 0, "lines": 0, "units": 0, "revenue": _cents(0)}
    return {(shop, start): found.get((shop, _utc(start)), empty) for shop, start in keys}


def shifts_delivery_totals(client: Client, keys: Sequence[ShiftKey]) -> dict[ShiftKey, dict[str, int]]:
    found = {(int(shop), _utc(start)): {"lines": int(lines), "units": int(units)}
             for shop, start, lines, units in client.query(
                 SHIFT_DELIVERY_TOTALS, parameters=shift_range_parameters(keys)).result_rows}
    return {(shop, start): found.get((shop, _utc(start)), {"lines": 0, "units": 0}) for shop, start in keys}


def _cents(value: float) -> Decimal:
    return Decimal(str(round(float(value), 2))).quantize(Decimal("0.01"))
