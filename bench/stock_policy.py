"""Stock over a year (not in CI): ``python -m bench.stock_policy [--days 365] [--shops 5]``.

Runs every shift of every shop for ``--days`` days through the same pure functions the shift assets
call (``plan_deliveries`` at the shift's start, then ``simulate_terminal_sales``), carrying each
shop's stock from shift to shift, and prints per shop the lowest and highest stock any product had
at any moment (after each sale and delivery) against its levels, the sell-outs, and delivered
against sold units. The stock policy holds when every product stays within 0..target.
"""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import click

from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.simulation import configured_shelf, plan_deliveries, simulate_terminal_sales, stock_levels
from rossmann_local.domain.world import reference_world


@click.command(help=__doc__.splitlines()[0])
@click.option("--days", type=int, default=365, show_default=True)
@click.option("--shops", type=int, default=5, show_default=True)
def main(**options: int) -> None:
    args = SimpleNamespace(**options)
    world = reference_world(args.shops)
    started = time.perf_counter()
    header = ("shop", "products", "target min..max", "lowest", "highest", "over target", "sold-out shifts",
              "turned away", "delivered", "sold", "delivered/sold")
    rows = []
    all_within = True
    for shop in world.shops:
        shelf = configured_shelf(world, shop.city)
        targets = {p.product_id: stock_levels(world, shop, p.product_id).target for p in shelf}
        stock: dict[int, int] = {}
        lowest, highest = {pid: 0 for pid in targets}, {pid: 0 for pid in targets}
        delivered = sold = sold_out = turned_away = customers = 0
        for day in range(args.days):
            for shift in shifts_of_day(world, world.start_date + timedelta(days=day)):
                deliveries = plan_deliveries(world, shop, shift, shelf, stock)
                sales = simulate_terminal_sales(world, shop, shift, shelf, stock, deliveries)
                # every moment of the shift: replay its movements in time order
                level = dict.fromkeys(targets, 0) | stock
                moves = [(d.accepted_time, li.product_id, li.quantity) for d in deliveries for li in d.lines]
                moves += [(r.transaction_time, li.product_id, -li.quantity) for r in sales.receipts for li in r.lines]
                for _, pid, change in sorted(moves, key=lambda m: (m[0], -m[2])):
                    level[pid] += change
                    lowest[pid], highest[pid] = min(lowest[pid], level[pid]), max(highest[pid], level[pid])
                assert all(level[pid] == sales.closing_stock.get(pid, 0) for pid in targets), "the replay adds up"
                delivered += sum(li.quantity for d in deliveries for li in d.lines)
                sold += sales.units
                sold_out += len(sales.products_sold_out)
                turned_away += sales.customers_turned_away
                customers += sales.customers_turned_away + len(sales.receipts)
                stock = sales.closing_stock
        over = sum(1 for pid in targets if highest[pid] > targets[pid])
        all_within &= over == 0 and min(lowest.values()) >= 0
        product_shifts = len(targets) * args.days * len(shifts_of_day(world, world.start_date))
        rows.append((str(shop.shop_id), str(len(targets)), f"{min(targets.values())}..{max(targets.values())}",
                     str(min(lowest.values())), str(max(highest.values())), str(over),
                     f"{sold_out} ({sold_out / product_shifts:.1%})", f"{turned_away / customers:.2%}",
                     f"{delivered:,}", f"{sold:,}", f"{delivered / sold:.3f}"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"Stock policy over {args.days} days, {len(world.shops)} shops "
          f"({time.perf_counter() - started:.1f} s, pure simulation):\n")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print("\nsold-out shifts: product x shift in which a product sold its last unit (share of all product-shifts);"
          "\nturned away: customers who found nothing in stock, of all customers.")
    print(f"\nevery product within 0..its target at every moment: {'yes' if all_within else 'NO'}")
    if not all_within:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
