"""``shop_reports`` in ClickHouse: the one definition of its tables, used by the pipeline (which creates
them idempotently), the tests and the deployment.

Every reference column keeps its name and type; times are ``DateTime('UTC')`` (the reference's
``DateTime`` pinned to UTC so a server in another zone reads the same instants). Added columns:
``shift_start`` (the report's shop x shift key, part of the sort key so replacing a shift's rows
is a narrow delete) and the line's / delivery's own id.

Engine: MergeTree partitioned by month and ordered by (shop_id, shift_start, time), which fits
per-shop time queries. The reference's 4-month TTL is left out: it counts from the wall clock,
and the simulated days would expire as soon as they are written.

Exactly one copy per shop x shift: a report replaces its shift's rows by a lightweight DELETE of
(shop_id, shift_start) and one INSERT of the whole shift (one block, atomic). A retry or a re-run,
also after a failure that came after the insert, deletes whatever the earlier attempt wrote, so one
copy remains. Rejected alternatives: ReplacingMergeTree shows two copies until a merge unless
every reader uses FINAL, and it cannot drop rows that a re-run no longer produces;
``insert_deduplication_token`` only dedupes an identical retry, not a re-run with other content;
REPLACE PARTITION would need a partition per shop x shift, far too many partitions.
"""

from __future__ import annotations

DATABASE = "shop_reports"
TRANSACTIONS = "transactions"
DELIVERY = "delivery"

TRANSACTIONS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("shop_id", "UInt32"),
    ("country", "String"),
    ("city", "String"),
    ("terminal_id", "UInt32"),
    ("admin_id", "UInt32"),
    ("cashier_id", "UInt32"),
    ("transaction_id", "UInt64"),
    ("transaction_time", "DateTime('UTC')"),
    ("payment_method", "String"),
    ("product_id", "UInt32"),
    ("product_name", "String"),
    ("product_barcode", "String"),
    ("category_id", "UInt32"),
    ("category_name", "String"),
    ("product_price", "Float64"),
    ("product_discount", "Float64"),
    ("unit_price", "Float64"),
    ("quantity", "UInt32"),
    ("transaction_amount", "Float64"),
    ("loyalty_discount", "Float64"),
    ("discount_type", "String"),
    ("transaction_total_amount", "Float64"),
    ("item_id", "UInt64"),
    ("shift_start", "DateTime('UTC')"),
)

DELIVERY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("shop_id", "UInt32"),
    ("country", "String"),
    ("city", "String"),
    ("admin_id", "UInt32"),
    ("courier_id", "UInt32"),
    ("product_id", "UInt32"),
    ("product_name", "String"),
    ("category_id", "UInt32"),
    ("category_name", "String"),
    ("quantity", "UInt32"),
    ("accepted_time", "DateTime('UTC')"),
    ("delivery_id", "UInt64"),
    ("shift_start", "DateTime('UTC')"),
)

# The expected answers, per shop x day, from the simulation itself (``shop.expected_answers``), not read back
# from the reports: what a pipeline fed by this chain should arrive at. A day is replaced as a whole.
EXPECTED_SHOP_DAY = "expected_shop_day"
EXPECTED_CATALOGUE = "expected_catalogue"

EXPECTED_SHOP_DAY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("shop_id", "UInt32"),
    ("day", "Date"),  # the world's local day
    ("receipts", "UInt32"),
    ("lines", "UInt32"),
    ("units_sold", "UInt32"),
    ("revenue", "Decimal(18, 2)"),  # each receipt's total once
    ("units_delivered", "UInt32"),
    ("closing_stock", "UInt32"),  # units of every product in the shop after the day's last shift
    # What the original dashboards read, summing transaction_total_amount over the report's lines (each
    # receipt's total once per line): an over-count, here to compare a dashboard's figure with.
    ("revenue_summed_per_line", "Decimal(18, 2)"),
)

EXPECTED_CATALOGUE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("shop_id", "UInt32"),
    ("day", "Date"),
    ("product_id", "UInt32"),  # each product on sale at the day's close, at its last version then
    ("product_name", "String"),
    ("category_id", "UInt32"),
    ("category_name", "String"),
    ("price", "Decimal(18, 2)"),  # of the shop's city
    ("discount", "Decimal(18, 2)"),
)

# table -> (columns, the time column it is partitioned by month on, the sort key after shop_id)
TABLES: dict[str, tuple[tuple[tuple[str, str], ...], str, str]] = {
    TRANSACTIONS: (TRANSACTIONS_COLUMNS, "transaction_time", "shift_start, transaction_time"),
    DELIVERY: (DELIVERY_COLUMNS, "accepted_time", "shift_start, accepted_time"),
    EXPECTED_SHOP_DAY: (EXPECTED_SHOP_DAY_COLUMNS, "day", "day"),
    EXPECTED_CATALOGUE: (EXPECTED_CATALOGUE_COLUMNS, "day", "day, product_id"),
}


def create_table_sql(table: str) -> str:
    columns, time_column, sort_key = TABLES[table]
    body = ",\n    ".join(f"{name} {kind}" for name, kind in columns)
    return (f"CREATE TABLE IF NOT EXISTS {DATABASE}.{table} (\n    {body}\n)\n"
            f"ENGINE = MergeTree\nPARTITION BY toYYYYMM({time_column})\n"
            f"ORDER BY (shop_id, {sort_key})")


# How shop_reports changes after release 0.1.0: statements run after the CREATEs, in order, each
# idempotent (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS ...``), so a table an older release made
# reaches the columns above and a new one is unchanged. Append; never edit or remove one. Reports
# bind rows to columns by name, so an added column's position does not matter.
SCHEMA_CHANGES: tuple[str, ...] = (
    f"ALTER TABLE {DATABASE}.expected_shop_day ADD COLUMN IF NOT EXISTS revenue_summed_per_line Decimal(18, 2)",
)


def ddl() -> list[str]:
    """Every statement that creates or upgrades ``shop_reports``, idempotently, in order."""
    return [f"CREATE DATABASE IF NOT EXISTS {DATABASE}", *(create_table_sql(t) for t in TABLES), *SCHEMA_CHANGES]


def schema_differences(present: dict[str, dict[str, str]]) -> list[str]:
    """What the tables found (table -> column -> type, from ``system.columns``) lack or type
    differently from the columns above; empty when they match."""
    found = []
    for table, (columns, _, _) in TABLES.items():
        have = present.get(table, {})
        for name, kind in columns:
            if name not in have:
                found.append(f"{DATABASE}.{table} lacks column {name} {kind}")
            elif have[name] != kind:
                found.append(f"{DATABASE}.{table}.{name} is {have[name]}, not {kind}")
    return found


def column_names(table: str) -> list[str]:
    return [name for name, _ in TABLES[table][0]]


if __name__ == "__main__":  # the DDL as a script, e.g. for a ClickHouse init directory
    print(";\n\n".join(ddl()) + ";")
