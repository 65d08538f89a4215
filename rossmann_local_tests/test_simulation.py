"""The pure simulation: seeded, time passed in, stock never below zero."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.simulation import configured_shelf, plan_deliveries, simulate_terminal_sales
from rossmann_local.domain.world import World


@pytest.mark.parametrize("seed", range(12))
def test_stock_never_goes_below_zero_and_units_balance(world: World, seed: int) -> None:
    world = world.model_copy(update={"seed": seed})
    shop = world.shop(1 + seed % 5)
    shelf = configured_shelf(world, shop.city)
    opening = {p.product_id: (seed * 7 + p.product_id) % 6 for p in shelf}
    for shift in shifts_of_day(world, world.start_date):
        deliveries = plan_deliveries(world, shop, shift, shelf)
        sales = simulate_terminal_sales(world, shop, shift, shelf, opening, deliveries)
        delivered = {}
        for d in deliveries:
            for line in d.lines:
                delivered[line.product_id] = delivered.get(line.product_id, 0) + line.quantity
        for product in shelf:
            pid = product.product_id
            sold = sum(li.quantity for r in sales.receipts for li in r.lines if li.product_id == pid)
            assert sales.closing_stock[pid] == opening[pid] + delivered.get(pid, 0) - sold >= 0
        opening = sales.closing_stock


def test_a_shift_is_a_pure_function_of_its_inputs(world: World) -> None:
    shop, shift = world.shop(2), shifts_of_day(world, world.start_date)[1]
    shelf = configured_shelf(world, shop.city)
    stock = {p.product_id: 50 for p in shelf}
    assert simulate_terminal_sales(world, shop, shift, shelf, stock, []).receipts == \
        simulate_terminal_sales(world, shop, shift, shelf, dict(stock), []).receipts
    other_seed = world.model_copy(update={"seed": world.seed + 1})
    assert simulate_terminal_sales(other_seed, shop, shift, shelf, stock, []).receipts != \
        simulate_terminal_sales(world, shop, shift, shelf, stock, []).receipts


def test_receipt_times_lie_inside_the_shift_and_each_terminal_serves_about_every_five_minutes(world: World) -> None:
    shop, shift = world.shop(1), shifts_of_day(world, world.start_date)[0]
    shelf = configured_shelf(world, shop.city)
    sales = simulate_terminal_sales(world, shop, shift, shelf, {p.product_id: 10_000 for p in shelf}, [])
    assert all(shift.start <= r.transaction_time < shift.end for r in sales.receipts)
    per_terminal = [sum(1 for r in sales.receipts if r.terminal_id == t) for t in shop.terminal_ids]
    assert all(50 <= n <= 95 for n in per_terminal), per_terminal  # 72 expected in 6 hours
    assert sales.customers_turned_away == 0


def test_deliveries_come_at_ten_and_six_with_two_hundred_to_four_ninety_units(world: World) -> None:
    shop = world.shop(3)
    shelf = configured_shelf(world, shop.city)
    morning, evening = (plan_deliveries(world, shop, s, shelf) for s in shifts_of_day(world, world.start_date))
    assert [d.accepted_time.hour for d in morning + evening] == [10, 18]
    for delivery in morning + evening:
        assert (delivery.courier_id, delivery.admin_id) == (1, shop.admin_id)
        assert 7 <= len(delivery.lines) <= 14
        assert all(200 <= li.quantity <= 490 and li.quantity % 10 == 0 for li in delivery.lines)


def test_an_empty_shelf_turns_customers_away(world: World) -> None:
    shop, shift = world.shop(1), shifts_of_day(world, world.start_date)[0]
    sales = simulate_terminal_sales(world, shop, shift, configured_shelf(world, "Berlin"), {}, [])
    assert sales.receipts == [] and sales.customers_turned_away > 0 and sales.revenue == Decimal("0")
