"""How the shop's outcomes read in the Dagster UI: each partition's own figures, tables and chart."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from rossmann_local.domain.simulation import ShiftSales

# Levels, not flows: their sum over several shifts means nothing.
LEVELS = frozenset({"products_on_shelf", "stock_units_at_close"})


def run_totals(per_partition: list[dict[str, Any]]) -> dict[str, Any]:
    """The sums of the numeric flows of a run's partitions (levels, tables and text left out)."""
    totals: dict[str, Any] = {"partitions": len(per_partition)}
    for figures in per_partition:
        for name, value in figures.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and name not in LEVELS:
                totals[name] = totals.get(name, 0) + value
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in totals.items()}


# Up to this many partitions in a run, each partition's figures go on its own materialization through
# ``context.add_asset_metadata(..., partition_key=...)``. Dagster's method lists the run's partition
# keys and copies the metadata added so far on each call: quadratic in the run's partitions (a
# 1,400-partition run would spend about a minute per asset). Bigger runs (make backfill's ranged runs)
# log one observation of the asset per run with a table of every partition's figures instead: not on
# the materializations, since a ranged run's metadata is copied onto each of its partitions' (a
# 1,400-row table on 1,400 materializations took 120 ms per event, measured).
PER_PARTITION_LIMIT = 100


def figures_table(figures: dict[str, dict[str, Any]]) -> dg.TableMetadataValue:
    """Every partition's numeric figures as one table: a row per partition key, every row with every
    column (a figure a partition has not, e.g. a shift without a delivery, is empty: Dagster refuses a
    table whose rows differ in their fields)."""
    names = sorted({name for own in figures.values() for name, value in own.items()
                    if isinstance(value, int | float) and not isinstance(value, bool)})
    columns = [dg.TableColumn("partition", "string"), *(dg.TableColumn(name, "float") for name in names)]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"partition": key, **{n: own.get(n) for n in names}})
                 for key, own in figures.items()],
        schema=dg.TableSchema(columns=columns))


def per_partition_metadata(context: dg.AssetExecutionContext, figures: dict[str, dict[str, Any]],
                           asset_key: str | None = None) -> dict[str, Any]:
    """Each partition's own figures go on that partition's materialization (up to
    ``PER_PARTITION_LIMIT`` partitions in the run; beyond, one observation of the asset holds them
    as a table). Returns the run-wide metadata: the run's size, true of every partition; the run's
    totals go to its log. ``asset_key`` names the asset of a multi-asset."""
    run_wide: dict[str, Any] = {"partitions_in_run": len(figures)}
    if len(figures) <= PER_PARTITION_LIMIT:
        for partition, own in figures.items():
            context.add_asset_metadata(own, asset_key=asset_key, partition_key=partition)
    else:
        context.log_event(dg.AssetObservation(asset_key=asset_key or context.asset_key, metadata={
            "partitions_in_run": len(figures), "figures_per_partition": figures_table(figures)}))
    if len(figures) > 1:
        totals = run_totals(list(figures.values()))
        context.log.info(f"{asset_key or 'run'} totals: " + ", ".join(f"{k} {v:,}" for k, v in totals.items()))
    return run_wide


def terminal_table(sales: ShiftSales) -> dg.TableMetadataValue:
    """Receipts and revenue per terminal, as a table the UI renders."""
    receipts: Counter[int] = Counter()
    revenue: dict[int, Decimal] = {}
    for r in sales.receipts:
        receipts[r.terminal_id] += 1
        revenue[r.terminal_id] = revenue.get(r.terminal_id, Decimal("0")) + r.total_amount
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"terminal_id": t, "receipts": receipts[t], "revenue": float(revenue[t])})
                 for t in sorted(receipts)],
        schema=dg.TableSchema(columns=[dg.TableColumn("terminal_id", "int"), dg.TableColumn("receipts", "int"),
                                       dg.TableColumn("revenue", "float")]),
    )


def revenue_by_hour_plot(sales: ShiftSales, timezone: str, width: int = 30) -> dg.MarkdownMetadataValue:
    """Revenue per hour of the shift as a Markdown bar chart, in the shop's local time: the shape
    of the shift (rush hours, quiet hours) at a glance in the UI."""
    zone = ZoneInfo(timezone)
    receipts: Counter[int] = Counter()
    revenue: dict[int, Decimal] = {}
    for r in sales.receipts:
        hour = r.transaction_time.astimezone(zone).hour
        receipts[hour] += 1
        revenue[hour] = revenue.get(hour, Decimal("0")) + r.total_amount
    if not revenue:
        return dg.MetadataValue.md("No receipts in this shift.")
    top = max(revenue.values())
    rows = ["| hour | receipts | revenue EUR | |", "|---|---:|---:|---|"]
    for hour in sorted(revenue):
        bar = "█" * max(1, round(width * revenue[hour] / top)) if top else ""
        rows.append(f"| {hour:02d}:00 | {receipts[hour]} | {revenue[hour]:,.2f} | `{bar}` |")
    return dg.MetadataValue.md("\n".join(rows))
