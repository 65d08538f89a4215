"""The shift's reports in ClickHouse, per shop x shift, each reconciled against the shop database.

Each report runs its reconciliation in its own op, right after writing (a blocking check): the
report counts as confirmed, and is recorded in the shop database, only when ClickHouse holds
exactly the shop's numbers. One op per report keeps the run short and opens ClickHouse once.
"""

import dagster as dg

from rossmann_local.defs.metadata import per_partition_metadata
from rossmann_local.defs.partitions import partitions_in_order
from rossmann_local.domain.world import World
from rossmann_local.resources.clickhouse import CLICKHOUSE_POOL, ClickHouseReports, redacted
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop.reports import DELIVERY_REPORT, TRANSACTIONS_REPORT, Report, ReportSent, send_report

REPORTS_GROUP = "reports"


def reconciliation(sent: ReportSent) -> dg.AssetCheckResult:
    """Passed when every figure in ClickHouse equals the shop database's."""
    return dg.AssetCheckResult(
        passed=sent.reconciles,
        description="ClickHouse equals the shop database" if sent.reconciles
        else f"differs in {', '.join(sent.differing)}",
        metadata={"shop_database": dg.MetadataValue.json({k: str(v) for k, v in sent.local.items()}),
                  "clickhouse": dg.MetadataValue.json({k: str(v) for k, v in sent.reported.items()})},
    )


def reconciliations(sent: list[ReportSent]) -> dg.AssetCheckResult:
    """One shift's reconciliation as it is; many shifts' as which of them differ."""
    if len(sent) == 1:
        return reconciliation(sent[0])
    differing = [f"{s.shift.code}|{s.shop.shop_id}" for s in sent if not s.reconciles]
    return dg.AssetCheckResult(
        passed=not differing,
        description=f"{len(sent)} shifts: ClickHouse equals the shop database" if not differing
        else f"{len(differing)} of {len(sent)} shifts differ",
        metadata={"differing_shifts": dg.MetadataValue.json(differing[:50])})


def build_report_assets(world: World, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    def materialize_report(context: dg.AssetExecutionContext, report: Report, shop_databases: ShopDatabases,
                           clickhouse: ClickHouseReports) -> dg.MaterializeResult:
        ordered = partitions_in_order(world, context.partition_keys)
        key_of = {(p.shop.shop_id, p.shift.start): p.key for p in ordered}
        sent = send_report(world, report, [(p.shop, p.shift) for p in ordered], shop_databases, clickhouse)
        figures = {key_of[s.shop.shop_id, s.shift.start]:
                   {"rows": s.rows, **{k: float(v) if k == "revenue" else v for k, v in s.reported.items()}}
                   for s in sent}
        where = dg.MetadataValue.text(redacted(clickhouse.resolved_dsn()))
        metadata = {**per_partition_metadata(context, figures), "clickhouse": where}
        return dg.MaterializeResult(metadata=metadata, check_results=[reconciliations(sent)])

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
        return materialize_report(context, TRANSACTIONS_REPORT, shop_databases, clickhouse)

    @dg.asset(partitions_def=partitions, group_name=REPORTS_GROUP, deps=["shift_deliveries"],
              pool=CLICKHOUSE_POOL, kinds={"clickhouse"},
              check_specs=[dg.AssetCheckSpec("reconciles_with_shop_database", asset="delivery_report",
                                             blocking=True, description="Delivered products and units in "
                                             "ClickHouse equal the shop database's for the shift.")])
    def delivery_report(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                        clickhouse: ClickHouseReports) -> dg.MaterializeResult:
        """The shift's deliveries in ``shop_reports.delivery``, one row per delivered product. The
        deliveries stay in the shop database, so a report that failed is simply sent again."""
        return materialize_report(context, DELIVERY_REPORT, shop_databases, clickhouse)

    return [transactions_report, delivery_report]
