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

from rossmann_local.defs.partitions import shop_and_shift
from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.world import World
from rossmann_local.reports.analytics import shift_delivery_totals, shift_transactions_totals
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
    def send_report(context: dg.AssetExecutionContext, shop_databases: ShopDatabases, clickhouse: ClickHouseReports,
                    table: str, rows_of: RowsOf, local_totals: Totals, report_totals: Totals) -> dg.MaterializeResult:
        """Read the shift's rows, replace them in ClickHouse, reconcile, and only then record it locally."""
        shop, shift = shop_and_shift(world, context.partition_key)
        city = world.city_of(shop)
        with shop_databases.transaction(shop.shop_id) as conn:
            rows = rows_of(conn, shift, shop.shop_id, city.country, city.name)
            local = local_totals(conn, shift)
        with clickhouse.client() as client:
            clickhouse.replace_shift_rows(client, table, shop.shop_id, shift.start, rows)
            reported = report_totals(client, shop.shop_id, shift.start)
        check = reconciliation(local, reported)
        if check.passed:
            with shop_databases.transaction(shop.shop_id) as conn:
                record_report(conn, shift, table, len(rows), datetime.now(UTC))
        return dg.MaterializeResult(
            metadata={"rows": len(rows), **{k: float(v) if k == "revenue" else v for k, v in reported.items()},
                      "clickhouse": dg.MetadataValue.text(redacted(clickhouse.resolved_dsn()))},
            check_results=[check],
        )

    @dg.asset(partitions_def=partitions, group_name=REPORTS_GROUP, deps=["shift_transactions"],
              pool=CLICKHOUSE_POOL, kinds={"clickhouse"},
              check_specs=[dg.AssetCheckSpec("reconciles_with_shop_database", asset="transactions_report",
                                             blocking=True, description="Receipts, lines, units and revenue in "
                                             "ClickHouse equal the shop database's for the shift.")])
    def transactions_report(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                            clickhouse: ClickHouseReports) -> dg.MaterializeResult:
        """The shift's receipt lines in ``shop_reports.transactions``, with product name, price and
        discount as they were at sale time and the shift's admin and cashiers; exactly one copy
        per shop x shift, however often it runs."""
        return send_report(context, shop_databases, clickhouse, TRANSACTIONS, transactions_report_rows,
                           ledger.shift_totals, shift_transactions_totals)

    @dg.asset(partitions_def=partitions, group_name=REPORTS_GROUP, deps=["shift_deliveries"],
              pool=CLICKHOUSE_POOL, kinds={"clickhouse"},
              check_specs=[dg.AssetCheckSpec("reconciles_with_shop_database", asset="delivery_report",
                                             blocking=True, description="Delivered products and units in "
                                             "ClickHouse equal the shop database's for the shift.")])
    def delivery_report(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                        clickhouse: ClickHouseReports) -> dg.MaterializeResult:
        """The shift's deliveries in ``shop_reports.delivery``, one row per delivered product. The
        deliveries stay in the shop database, so a report that failed is simply sent again."""
        return send_report(context, shop_databases, clickhouse, DELIVERY, delivery_report_rows,
                           ledger.shift_delivery_totals, shift_delivery_totals)

    return [transactions_report, delivery_report]
