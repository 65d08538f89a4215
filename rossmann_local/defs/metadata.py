"""How the shop's outcomes read in the Dagster UI: each partition's own figures, tables and chart."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator

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


def add_partitions_metadata(context: dg.AssetExecutionContext, figures: dict[str, dict[str, Any]],
                            asset_key: str | None = None) -> None:
    """``context.add_asset_metadata(own, asset_key, partition_key=key)`` for every partition at once.

    Dagster's method lists every partition key of the run's range to validate the one given, and
    copies all the metadata added so far, on each call: quadratic in the run's partitions (a
    1,400-partition run spent about a minute in it per asset). This validates once and fills the
    same accumulator the method fills (a private attribute of the pinned Dagster; the tests read
    each partition's metadata back from runs of many partitions)."""
    key = dg.AssetKey.from_coercible(asset_key) if asset_key else context.assets_def.key
    if key not in context.assets_def.keys:
        raise dg.DagsterInvariantViolationError(f"asset {key.to_user_string()} is not materialized by this step")
    if unknown := set(figures) - set(context.partition_keys):
        raise dg.DagsterInvariantViolationError(f"partitions {sorted(unknown)[:3]} are not targeted by this run")
    step = context.get_step_execution_context()
    current = step._metadata_accumulator.per_output_metadata
    added = {}
    for partition, own in figures.items():
        handle = AssetMetadataHandle(asset_key=key, partition_key=partition)
        added[handle] = {**current.get(handle, {}), **own}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata={**current, **added})


def per_partition_metadata(context: dg.AssetExecutionContext, figures: dict[str, dict[str, Any]],
                           asset_key: str | None = None) -> dict[str, Any]:
    """Each partition's own figures go on that partition's materialization, however many
    partitions the run covers (a single-run backfill makes one event per partition, and Dagster
    merges partition-scoped metadata into each). Returns the run-wide metadata: just the run's
    size, true of every partition; the run's totals go to its log. ``asset_key`` names the asset of
    a multi-asset."""
    add_partitions_metadata(context, figures, asset_key)
    if len(figures) > 1:
        totals = run_totals(list(figures.values()))
        context.log.info(f"{asset_key or 'run'} totals: " + ", ".join(f"{k} {v:,}" for k, v in totals.items()))
    return {"partitions_in_run": len(figures)}


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
