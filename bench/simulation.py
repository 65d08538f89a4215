"""Simulation benchmark (not in CI): ``python -m bench.simulation``.

The pure simulation alone, on one core, as the chain runs it: every shift of ``--shops`` reference
shops over ``--days`` days, each shift's delivery planned from the stock the previous one left, then
its sales, with no database. Prints receipts and receipt lines per second (median of ``--repeats``)
and a digest of every row, which must not change when the simulation is made faster.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from datetime import timedelta
from types import SimpleNamespace

import click

from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.simulation import configured_shelf, plan_deliveries, simulate_terminal_sales
from rossmann_local.domain.world import reference_world

# Receipts per second of the simulation before issue 16 made it faster (median of 3 runs of this
# benchmark at 4d80c84, alternating with the new code in one session; rows digest f89355e0232d3d04).
SIMULATION_BEFORE = 29_522

RECEIPT_FIELDS = ("transaction_id", "terminal_id", "cashier_id", "transaction_time", "amount", "loyalty_discount",
                  "discount_type", "total_amount", "payment_method")
LINE_FIELDS = ("item_id", "product_id", "quantity", "unit_price", "product_name", "product_barcode", "category_id",
               "category_name", "product_price", "product_discount")


def run(shops: int, days: int, part: int = 0, parts: int = 1) -> tuple[int, int, float, str]:
    """(receipts, lines, seconds, digest of the rows) for one pass over every shop's shifts (with
    ``parts`` > 1, over the shops whose id falls to ``part``: one process's share)."""
    world = reference_world(shops)
    shifts = [s for d in range(days) for s in shifts_of_day(world, world.start_date + timedelta(days=d))]
    digest = hashlib.sha256()
    receipts = lines = 0
    seconds = 0.0
    for shop in world.shops:
        if shop.shop_id % parts != part:
            continue
        shelf = configured_shelf(world, shop.city)
        stock: dict[int, int] = {}
        for shift in shifts:
            started = time.perf_counter()
            deliveries = plan_deliveries(world, shop, shift, shelf, stock)
            sales = simulate_terminal_sales(world, shop, shift, shelf, stock, deliveries)
            seconds += time.perf_counter() - started
            stock = {pid: units for pid, units in sales.closing_stock.items() if units}
            receipts += len(sales.receipts)
            for r in sales.receipts:
                rows = [tuple(getattr(line, f) for f in LINE_FIELDS) for line in r.lines]
                lines += len(rows)
                digest.update(repr((tuple(getattr(r, f) for f in RECEIPT_FIELDS), rows)).encode())
    return receipts, lines, seconds, digest.hexdigest()[:16]


@click.command(help=__doc__.splitlines()[0])
@click.option("--shops", type=int, default=20, show_default=True)
@click.option("--days", type=int, default=14, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
def main(**options: int) -> None:
    args = SimpleNamespace(**options)
    results = [run(args.shops, args.days) for _ in range(args.repeats)]
    receipts, lines, _, digest = results[0]
    seconds = statistics.median(r[2] for r in results)
    print(f"{args.shops} shops x {args.days} days: {receipts:,} receipts, {lines:,} lines, rows digest {digest}")
    print(f"simulation: {seconds:.2f} s, {receipts / seconds:,.0f} receipts/s, {lines / seconds:,.0f} lines/s "
          f"(median of {args.repeats}: {', '.join(f'{r[2]:.2f}' for r in results)} s)")


if __name__ == "__main__":
    main()
