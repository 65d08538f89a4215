"""The shift's reports in ClickHouse, per shop x shift, each reconciled against the shop database.

Each report runs its reconciliation in its own op, right after writing (a blocking check): the
report counts as confirmed, and is recorded in the shop database, only when ClickHouse holds
exactly the shop's numbers. One op per report keeps the run short and opens ClickHouse once.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from sqlalchemy import Connection

from rossmann_local.defs.partitions import SINGLE_RUN_BACKFILL, combined_metadata, shifts_in_order
from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.world import World
from rossmann_local.reports.analytics import shifts_delivery_totals, shifts_transactions_totals
from rossmann_local.reports.schema import DELIVERY, TRANSACTIONS
from rossmann_local.resources.clickhouse import CLICKHOUSE_POOL, ClickHouseReports, redacted
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.report_rows import delivery_report_rows, record_report, transactions_report_rows

REPORTS_GROUP = "reports"

RowsOf = Callable[[Connection, ShiftWindow, int, str, str], list[tuple[Any, ...]]]
Totals = Callable[..., dict[str, Any]]


def reconciliation(local: dict[str, Any], reported: dict[str, Any]) -> dg.AssetCheckResult:
    """Passed when every figure in ClickHouse equals the shop database's."""
    differing = sorted(k for k in local if local[k] != reported.get(k))
    return dg.AssetCheckResult(
        passed=not differing,
        description="ClickHouse equals the shop database" if not differing else f"differs in {', '.join(differing)}",
        metadata={"shop_database": dg.MetadataValue.json({k: str(v) for k, v in local.items()}),
                  "clickhouse": dg.MetadataValue.json({k: str(v) for k, v in reported.items()})},
    )


def build_report_assets(world: World, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    def send_reports(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                     clickhouse: ClickHouseReports, table: str, rows_of: RowsOf, local_totals: Totals,
                     report_totals: Totals) -> dg.MaterializeResult:
        """For each of the run's shifts, read its rows and replace them in ClickHouse; then reconcile
        them all with one query, and record locally only the shifts that reconcile. One ClickHouse
        client, one look for earlier copies and one reconciliation query per run, however many shifts."""
        shifts = shifts_in_order(world, context.partition_keys)
        keys = [(shop.shop_id, shift.start) for shop, shift in shifts]
        local, sent = {}, {}
        with clickhouse.client() as client:
            present = clickhouse.shifts_present(client, table, keys)
            for (shop, shift), key in zip(shifts, keys, strict=True):
                city = world.city_of(shop)
                with shop_databases.transaction(shop.shop_id) as conn:
                    rows = rows_of(conn, shift, shop.shop_id, city.country, city.name)
                    local[key] = local_totals(conn, shift)
                clickhouse.replace_shift_rows(client, table, shop.shop_id, shift.start, rows,
                                              present=(shop.shop_id, int(shift.start.timestamp())) in present)
                sent[key] = len(rows)
            reported = report_totals(client, keys)
        figures, checks = [], []
        for (shop, shift), key in zip(shifts, keys, strict=True):
            check = reconciliation(local[key], reported[key])
            if check.passed:
                with shop_databases.transaction(shop.shop_id) as conn:
                    record_report(conn, shift, table, sent[key], datetime.now(UTC))
            figures.append({"rows": sent[key],
                            **{k: float(v) if k == "revenue" else v for k, v in reported[key].items()}})
            checks.append((f"{shift.code}|{shop.shop_id}", check))
        where = dg.MetadataValue.text(redacted(clickhouse.resolved_dsn()))
        metadata = {**combined_metadata(figures), "clickhouse": where}
        if len(checks) == 1:
            return dg.MaterializeResult(metadata=metadata, check_results=[checks[0][1]])
        differing = [key for key, check in checks if not check.passed]
        summary = dg.AssetCheckResult(
            passed=not differing,
            description=f"{len(checks)} shifts: ClickHouse equals the shop database" if not differing
            else f"{len(differing)} of {len(checks)} shifts differ",
            metadata={"differing_shifts": dg.MetadataValue.json(differing[:50])})
        return dg.MaterializeResult(metadata=metadata, check_results=[summary])

    @dg.asset(partitions_def=partitions, group_name=REPORTS_GROUP, deps=["shift_transactions"],
              pool=CLICKHOUSE_POOL, kinds={"clickhouse"}, backfill_policy=SINGLE_RUN_BACKFILL,
              check_specs=[dg.AssetCheckSpec("reconciles_with_shop_database", asset="transactions_report",
                                             blocking=True, description="Receipts, lines, units and revenue in "
                                             "ClickHouse equal the shop database's for the shift.")])
    def transactions_report(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                            clickhouse: ClickHouseReports) -> dg.MaterializeResult:
        """The shift's receipt lines in ``shop_reports.transactions``, with product name, price and
        discount as they were at sale time and the shift's admin and cashiers; exactly one copy
        per shop x shift, however often it runs."""
        return send_reports(context, shop_databases, clickhouse, TRANSACTIONS, transactions_report_rows,
                           ledger.shift_totals, shifts_transactions_totals)

    @dg.asset(partitions_def=partitions, group_name=REPORTS_GROUP, deps=["shift_deliveries"],
              pool=CLICKHOUSE_POOL, kinds={"clickhouse"}, backfill_policy=SINGLE_RUN_BACKFILL,
              check_specs=[dg.AssetCheckSpec("reconciles_with_shop_database", asset="delivery_report",
                                             blocking=True, description="Delivered products and units in "
                                             "ClickHouse equal the shop database's for the shift.")])
    def delivery_report(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                        clickhouse: ClickHouseReports) -> dg.MaterializeResult:
        """The shift's deliveries in ``shop_reports.delivery``, one row per delivered product. The
        deliveries stay in the shop database, so a report that failed is simply sent again."""
        return send_reports(context, shop_databases, clickhouse, DELIVERY, delivery_report_rows,
                           ledger.shift_delivery_totals, shifts_delivery_totals)

    return [transactions_report, delivery_report]
