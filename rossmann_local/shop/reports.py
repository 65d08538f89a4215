"""The shift's reports in ClickHouse (docs/contracts.md defects 6-8): exactly one copy per shop x shift,
the shift's own rows at sale-time values, confirmed locally only when ClickHouse reconciles with
the shop database. Local rows are never deleted, so a report that failed is simply sent again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.world import Shop, World
from rossmann_local.reports.analytics import ShiftKey, shifts_delivery_totals, shifts_transactions_totals
from rossmann_local.reports.schema import DELIVERY, TRANSACTIONS
from rossmann_local.reports.writer import ReportBatch, ReportRows
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.report_rows import delivery_report_rows, record_report, transactions_report_rows


@dataclass(frozen=True)
class Report:
    """One report: its table, how the shop database gives a shift's rows and totals, and how
    ClickHouse gives the totals of many shifts at once."""

    table: str
    rows_of: Callable[[Connection, ShiftWindow, int, str, str], ReportRows]
    local_totals: Callable[[Connection, ShiftWindow], dict[str, Any]]
    reported_totals: Callable[[Any, Sequence[ShiftKey]], dict[ShiftKey, dict[str, Any]]]


TRANSACTIONS_REPORT = Report(TRANSACTIONS, transactions_report_rows, ledger.shift_totals, shifts_transactions_totals)
DELIVERY_REPORT = Report(DELIVERY, delivery_report_rows, ledger.shift_delivery_totals, shifts_delivery_totals)


@dataclass(frozen=True)
class ReportSent:
    """One shop x shift of a report: how many rows went, and the totals on both sides."""

    shop: Shop
    shift: ShiftWindow
    rows: int
    local: dict[str, Any]
    reported: dict[str, Any]

    @property
    def differing(self) -> list[str]:
        """The figures in which ClickHouse differs from the shop database."""
        return sorted(k for k in self.local if self.local[k] != self.reported.get(k))

    @property
    def reconciles(self) -> bool:
        return not self.differing


def send_report(world: World, report: Report, shifts: Sequence[tuple[Shop, ShiftWindow]],
                shop_databases: ShopDatabases, clickhouse: ClickHouseReports) -> list[ReportSent]:
    """For each shift, read its rows and replace them in ClickHouse; then reconcile them all with one
    query, and record locally only the shifts that reconcile. Per ``ROWS_PER_INSERT`` rows one look
    for earlier copies and one INSERT, and one reconciliation query, however many shifts; ClickHouse
    is held only for those, not while the rows are read from the shop databases, and the last INSERT
    and the reconciliation share one hold (a run of a few shifts opens ClickHouse once). A failure
    midway leaves some shifts written and none recorded: the next run finds them present, deletes
    and writes them again, so there is still exactly one copy."""
    keys = [(shop.shop_id, shift.start) for shop, shift in shifts]
    local, sent = {}, {}
    batch = ReportBatch(clickhouse.client)  # ClickHouse is held only while a batch is written
    for (shop, shift), key in zip(shifts, keys, strict=True):
        city = world.city_of(shop)
        with shop_databases.transaction(shop.shop_id) as conn:
            rows = report.rows_of(conn, shift, shop.shop_id, city.country, city.name)
            local[key] = report.local_totals(conn, shift)
        batch.add(shop.shop_id, shift.start, rows)
        sent[key] = len(rows)
    with clickhouse.client() as client:
        batch.flush(client)
        reported = report.reported_totals(client, keys)
    outcomes = [ReportSent(shop, shift, sent[key], local[key], reported[key])
                for (shop, shift), key in zip(shifts, keys, strict=True)]
    for outcome in outcomes:
        if outcome.reconciles:
            with shop_databases.transaction(outcome.shop.shop_id) as conn:
                # Bookkeeping on the wall clock: when ClickHouse confirmed the report.
                record_report(conn, outcome.shift, report.table, outcome.rows, datetime.now(UTC))
    return outcomes
