"""The simulated shift: deliveries and terminal sales as pure functions of their inputs.

Everything random comes from a generator seeded by (world seed, what, shop, shift), and simulated
time comes from the shift window passed in, so a re-run of a shift reproduces the same receipts.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from itertools import accumulate
from math import log
from random import Random
from typing import NamedTuple

from rossmann_local.domain.shifts import (
    CENT,
    ShiftWindow,
    inflation_factor,
    round_money,
    seeded_rng,
    shift_index,
)
from rossmann_local.domain.world import Shop, World

RECEIPTS_PER_SHIFT_LIMIT = 100_000  # the sequence part of a transaction id has five digits
DISCOUNT_TYPE = "percentage"


@dataclass(frozen=True)
class ShelfProduct:
    """A product as the shop's cache knows it when the shift starts (catalogue price, before inflation)."""

    product_id: int
    name: str
    barcode: str
    category_id: int
    category_name: str
    price: Decimal
    discount: Decimal


@dataclass(frozen=True)
class ShelfTimeline:
    """The shelf as the shop's catalogue history has it during a shift: the shelf in effect at the
    shift's start, and a new one at each moment a catalogue version takes effect within the shift.
    A receipt is sold at the shelf in effect at its own time."""

    changes: tuple[tuple[datetime, tuple[ShelfProduct, ...]], ...]  # (from, shelf), in time order

    @classmethod
    def constant(cls, shelf: Sequence[ShelfProduct], since: datetime) -> ShelfTimeline:
        return cls(((since, tuple(shelf)),))

    def at(self, moment: datetime) -> tuple[ShelfProduct, ...]:
        current = self.changes[0][1]
        for since, shelf in self.changes:
            if since > moment:
                break
            current = shelf
        return current

    @property
    def products(self) -> set[int]:
        return {p.product_id for _, shelf in self.changes for p in shelf}


@dataclass(frozen=True)
class DeliveryLine:
    product_id: int
    quantity: int
    product_name: str
    category_id: int
    category_name: str


@dataclass(frozen=True)
class Delivery:
    delivery_id: int
    accepted_time: datetime
    courier_id: int
    admin_id: int
    lines: tuple[DeliveryLine, ...]


class ReceiptLine(NamedTuple):
    """A line of a receipt (a named tuple: made some hundred thousand times a second)."""

    item_id: int
    product_id: int
    quantity: int
    unit_price: Decimal
    product_name: str
    product_barcode: str
    category_id: int
    category_name: str
    product_price: Decimal
    product_discount: Decimal


class Receipt(NamedTuple):
    transaction_id: int
    terminal_id: int
    cashier_id: int
    transaction_time: datetime
    amount: Decimal
    loyalty_discount: Decimal
    discount_type: str
    total_amount: Decimal
    payment_method: str
    lines: tuple[ReceiptLine, ...]


@dataclass
class ShiftSales:
    receipts: list[Receipt] = field(default_factory=list)
    customers_turned_away: int = 0
    products_sold_out: set[int] = field(default_factory=set)
    closing_stock: dict[int, int] = field(default_factory=dict)

    @property
    def lines(self) -> int:
        return sum(len(r.lines) for r in self.receipts)

    @property
    def units(self) -> int:
        return sum(line.quantity for r in self.receipts for line in r.lines)

    @property
    def revenue(self) -> Decimal:
        return sum((r.total_amount for r in self.receipts), Decimal("0"))

    @property
    def revenue_summed_per_line(self) -> Decimal:
        """Each receipt's total once per line: what the original dashboards compute by summing
        ``transaction_total_amount`` over the report's lines (an over-count; for comparison)."""
        return sum((r.total_amount * len(r.lines) for r in self.receipts), Decimal("0"))


def configured_shelf(world: World, city: str) -> list[ShelfProduct]:
    """The world's catalogue as a shop in ``city`` would have it cached (for tests and benchmarks)."""
    categories = {c.category_id: c.name for c in world.categories}
    return [ShelfProduct(product_id=p.product_id, name=p.name, barcode=p.barcode, category_id=p.category_id,
                         category_name=categories[p.category_id], price=p.prices[city].price,
                         discount=p.prices[city].discount) for p in world.products]


@dataclass(frozen=True)
class StockLevels:
    """A product's replenishment levels in one shop: ordered up to ``target`` once at or below
    ``reorder_point``."""

    reorder_point: int
    target: int


def stock_levels(world: World, shop: Shop, product_id: int) -> StockLevels:
    """The shop's levels for a product: drawn from the seed per shop and product, so they stay the
    same for the world's life and for every re-run."""
    model = world.sales
    target = seeded_rng(world.seed, "target stock", shop.shop_id, product_id).randrange(
        model.target_stock_min, model.target_stock_max + 1, model.target_stock_step)
    return StockLevels(reorder_point=int(target * model.reorder_point_share), target=target)


def plan_deliveries(world: World, shop: Shop, shift: ShiftWindow, shelf: Sequence[ShelfProduct],
                    opening_stock: Mapping[int, int]) -> list[Delivery]:
    """The courier's delivery in this shift, under the shop's stock policy: at the shift's start
    every product on the shelf at or below its reorder point is ordered up to its target level, and
    the courier brings the order at the shift's first delivery time. A shift without a delivery time,
    or with nothing to order, has no delivery; its low products wait for the next one."""
    times = [shift.at(t) for t in world.sales.delivery_times if shift.contains(shift.at(t))]
    if not times:
        return []
    lines = []
    for p in sorted(shelf, key=lambda p: p.product_id):
        levels, on_hand = stock_levels(world, shop, p.product_id), opening_stock.get(p.product_id, 0)
        if on_hand <= levels.reorder_point:
            lines.append(DeliveryLine(product_id=p.product_id, quantity=levels.target - on_hand, product_name=p.name,
                                      category_id=p.category_id, category_name=p.category_name))
    if not lines:
        return []
    accepted = min(times)
    return [Delivery(delivery_id=int(accepted.strftime("%y%m%d%H%M")), accepted_time=accepted,
                     courier_id=world.courier_id, admin_id=shop.admin_id, lines=tuple(lines))]


class _Weighted:
    """A weighted choice, drawn inline in the sales loop exactly as ``Random.choices(values,
    weights)[0]`` draws it: ``values[bisect(cumulative, random() * total, 0, hi)]``, with the
    cumulative weights summed once, not on every draw."""

    __slots__ = ("cumulative", "hi", "total", "values")

    def __init__(self, values: list, weights: list[float]) -> None:
        self.values = values
        self.cumulative = list(accumulate(weights))
        self.total = self.cumulative[-1] + 0.0
        self.hi = len(values) - 1


@cache
def _fewer_more_likely(upper: int) -> _Weighted:
    """Choices 1..upper with weight 1/k: one is most likely, each larger count less so."""
    values = list(range(1, upper + 1))
    return _Weighted(values, [1 / k for k in values])


_ZERO = Decimal("0")
_SAMPLE_POOL_SIZE = 21  # Random.sample draws from a pool (not a set) up to this population, for k <= 5


@dataclass(frozen=True, slots=True)
class _Priced:
    product_id: int
    unit_price: Decimal  # the catalogue price with the day's inflation and the product's discount
    line_fields: tuple  # a receipt line's fields from its unit price on, in ReceiptLine's order

    @classmethod
    def of(cls, p: ShelfProduct, inflation: Decimal) -> _Priced:
        list_price = round_money(p.price * inflation)
        unit_price = round_money(p.price * inflation * (1 - p.discount))
        return cls(p.product_id, unit_price,
                   (unit_price, p.name, p.barcode, p.category_id, p.category_name, list_price, p.discount))


def _priced_shelf(products: Sequence[ShelfProduct], inflation: Decimal) -> list[_Priced]:
    return [_Priced.of(p, inflation) for p in sorted(products, key=lambda p: p.product_id)]


def _customer_arrivals(world: World, shop: Shop, shift: ShiftWindow, rng: Random) -> list[tuple[datetime, int]]:
    """(time, terminal) of every customer: a Poisson stream per terminal with the model's mean gap
    (``rng.expovariate``'s draw, inline), each rounded to the second."""
    rate = 1 / world.sales.customer_interval_minutes
    length = (shift.end - shift.start).total_seconds() / 60
    seconds = int((shift.end - shift.start).total_seconds())
    random = rng.random
    arrivals = []
    for terminal_id in shop.terminal_ids:
        minute = -log(1.0 - random()) / rate
        while minute < length:
            arrivals.append((round(minute * 60), terminal_id))
            minute += -log(1.0 - random()) / rate
    arrivals.sort()
    start = shift.start
    return [(start + timedelta(seconds=at), terminal_id) for at, terminal_id in arrivals if at < seconds]


def simulate_terminal_sales(world: World, shop: Shop, shift: ShiftWindow,
                            shelf: Sequence[ShelfProduct] | ShelfTimeline, opening_stock: dict[int, int],
                            deliveries: Sequence[Delivery]) -> ShiftSales:
    """Every receipt of the shop's terminals during the shift, stock never below zero, each sold at
    the shelf (names, prices, discounts) in effect at its own time.

    Deliveries restock the shelf at their accepted time; a customer who finds nothing in stock
    leaves without a receipt (counted as turned away).
    """
    timeline = shelf if isinstance(shelf, ShelfTimeline) else ShelfTimeline.constant(shelf, shift.start)
    rng = seeded_rng(world.seed, "sales", shop.shop_id, shift.code)
    random, sample, below = rng.random, rng.sample, rng._randbelow
    model = world.sales
    inflation = inflation_factor(world, shift.local_date)
    cashiers = shop.cashier_ids
    first = shift_index(world, shift)
    cashier_at = {t: cashiers[(i + first) % len(cashiers)] for i, t in enumerate(shop.terminal_ids)}
    loyalty = _Weighted([Decimal(v) for v in model.loyalty_discounts], list(model.loyalty_discounts.values()))
    to_pay = {value: 1 - value for value in loyalty.values}
    method = _Weighted(list(model.payment_methods), list(model.payment_methods.values()))
    max_lines, max_units = model.max_lines_per_receipt, model.max_units_per_line
    # A count of 1..upper (``_fewer_more_likely(upper)``), drawn inline: the loop's hottest call.
    counts = [None, *(_fewer_more_likely(upper) for upper in range(1, max(max_lines, max_units) + 1))]
    # Each shelf of the timeline, sorted, with its products' list and unit prices, worked out once.
    # Receipts are drawn exactly as ``Random.choices``/``Random.sample`` would (same calls, same
    # order), so the rows are those of every earlier release for the same seed.
    shelves = [(since, _priced_shelf(products, inflation)) for since, products in timeline.changes]

    stock = dict.fromkeys(sorted(timeline.products), 0) | dict(opening_stock)
    pending = sorted(deliveries, key=lambda d: d.accepted_time)
    sales = ShiftSales()
    receipts = sales.receipts
    sold_out = sales.products_sold_out
    shelf_index = 0
    on_shelf = shelves[0][1]
    base_id = shift.code * RECEIPTS_PER_SHIFT_LIMIT
    new_line = new_receipt = tuple.__new__  # the named tuples made from their fields in order (no keywords)

    def restock_until(moment: datetime | None) -> None:
        while pending and (moment is None or pending[0].accepted_time <= moment):
            for line in pending.pop(0).lines:
                stock[line.product_id] = stock.get(line.product_id, 0) + line.quantity

    in_stock: list[_Priced] | None = None  # the shelf's products in stock, listed again when that changes
    for arrived, terminal_id in _customer_arrivals(world, shop, shift, rng):
        if pending and pending[0].accepted_time <= arrived:
            restock_until(arrived)
            in_stock = None
        while shelf_index + 1 < len(shelves) and shelves[shelf_index + 1][0] <= arrived:
            shelf_index += 1
            on_shelf = shelves[shelf_index][1]
            in_stock = None
        if in_stock is None:
            in_stock = [p for p in on_shelf if stock.get(p.product_id, 0) > 0]
        if not in_stock:
            sales.customers_turned_away += 1
            continue
        seq = len(receipts) + 1
        if seq >= RECEIPTS_PER_SHIFT_LIMIT:
            raise ValueError(f"more than {RECEIPTS_PER_SHIFT_LIMIT - 1} receipts in one shift of shop {shop.shop_id}")
        transaction_id = base_id + seq
        n = len(in_stock)
        w = counts[n if n < max_lines else max_lines]
        k = w.values[bisect(w.cumulative, random() * w.total, 0, w.hi)]
        if n <= _SAMPLE_POOL_SIZE and k <= 5:  # Random.sample's own steps for a small population
            pool = in_stock.copy()
            picked = []
            for i in range(k):
                j = below(n - i)
                picked.append(pool[j])
                pool[j] = pool[n - i - 1]
        else:
            picked = sample(in_stock, k)
        lines = []
        amount = _ZERO
        for line_no, priced in enumerate(picked, start=1):
            pid = priced.product_id
            left = stock[pid]
            w = counts[left if left < max_units else max_units]
            quantity = w.values[bisect(w.cumulative, random() * w.total, 0, w.hi)]
            stock[pid] = left - quantity
            if left == quantity:
                sold_out.add(pid)
                in_stock = None
            amount += priced.unit_price * quantity
            lines.append(new_line(ReceiptLine, (transaction_id * 100 + line_no, pid, quantity, *priced.line_fields)))
        amount = amount.quantize(CENT, rounding=ROUND_HALF_UP)
        discount = loyalty.values[bisect(loyalty.cumulative, random() * loyalty.total, 0, loyalty.hi)]
        paid_by = method.values[bisect(method.cumulative, random() * method.total, 0, method.hi)]
        receipts.append(new_receipt(Receipt, (
            transaction_id, terminal_id, cashier_at[terminal_id], arrived, amount, discount, DISCOUNT_TYPE,
            (amount * to_pay[discount]).quantize(CENT, rounding=ROUND_HALF_UP), paid_by, tuple(lines))))
    restock_until(None)
    sales.closing_stock = stock
    return sales


@dataclass(frozen=True)
class ShiftSimulated:
    shift: ShiftWindow
    deliveries: list[Delivery]
    sales: ShiftSales


def simulate_shifts(world: World, shop: Shop, shifts: Sequence[ShiftWindow],
                    shelf: Callable[[ShiftWindow], Sequence[ShelfProduct] | ShelfTimeline],
                    opening_stock: Mapping[int, int] | None = None) -> Iterator[ShiftSimulated]:
    """The shop's shifts one after another as the chain runs them, without a database: each shift's
    delivery planned from the stock the previous one left, then its sales (``shelf(shift)`` gives the
    shelf or its timeline in the shift). The benchmarks time it; the tests pin its rows."""
    stock = dict(opening_stock or {})
    for shift in shifts:
        on_sale = shelf(shift)
        at_start = on_sale.at(shift.start) if isinstance(on_sale, ShelfTimeline) else on_sale
        deliveries = plan_deliveries(world, shop, shift, at_start, stock)
        sales = simulate_terminal_sales(world, shop, shift, on_sale, stock, deliveries)
        stock = {pid: units for pid, units in sales.closing_stock.items() if units}
        yield ShiftSimulated(shift, deliveries, sales)
