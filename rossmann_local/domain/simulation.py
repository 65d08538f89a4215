"""The simulated shift: deliveries and terminal sales as pure functions of their inputs.

Everything random comes from a generator seeded by (world seed, what, shop, shift), and simulated
time comes from the shift window passed in, so a re-run of a shift reproduces the same receipts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from random import Random

from rossmann_local.domain.shifts import (
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


@dataclass(frozen=True)
class ReceiptLine:
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


@dataclass(frozen=True)
class Receipt:
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


@cache
def _fewer_more_likely(upper: int) -> tuple[list[int], list[float]]:
    """Choices 1..upper with weight 1/k: one is most likely, each larger count less so."""
    values = list(range(1, upper + 1))
    return values, [1 / k for k in values]


def _customer_arrivals(world: World, shop: Shop, shift: ShiftWindow, rng: Random) -> list[tuple[datetime, int]]:
    """(time, terminal) of every customer: a Poisson stream per terminal with the model's mean gap."""
    mean_gap = world.sales.customer_interval_minutes
    length = (shift.end - shift.start).total_seconds() / 60
    arrivals = []
    for terminal_id in shop.terminal_ids:
        minute = rng.expovariate(1 / mean_gap)
        while minute < length:
            arrivals.append((shift.start + timedelta(seconds=round(minute * 60)), terminal_id))
            minute += rng.expovariate(1 / mean_gap)
    arrivals.sort()
    return [a for a in arrivals if a[0] < shift.end]


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
    model = world.sales
    inflation = inflation_factor(world, shift.local_date)
    cashiers = shop.cashier_ids
    first = shift_index(world, shift)
    cashier_at = {t: cashiers[(i + first) % len(cashiers)] for i, t in enumerate(shop.terminal_ids)}
    loyalty_values = [Decimal(v) for v in model.loyalty_discounts]
    loyalty_weights = list(model.loyalty_discounts.values())
    methods, method_weights = list(model.payment_methods), list(model.payment_methods.values())
    priced: dict[tuple[ShelfProduct, ...], tuple[list[ShelfProduct], dict[int, Decimal], dict[int, Decimal]]] = {}

    def shelf_at(moment: datetime) -> tuple[list[ShelfProduct], dict[int, Decimal], dict[int, Decimal]]:
        """The shelf in effect, sorted, with its list and unit prices (worked out once per shelf)."""
        products = timeline.at(moment)
        if products not in priced:
            priced[products] = (sorted(products, key=lambda p: p.product_id),
                                {p.product_id: round_money(p.price * inflation) for p in products},
                                {p.product_id: round_money(p.price * inflation * (1 - p.discount)) for p in products})
        return priced[products]

    stock = dict.fromkeys(sorted(timeline.products), 0) | dict(opening_stock)
    pending = sorted(deliveries, key=lambda d: d.accepted_time)
    sales = ShiftSales()

    def restock_until(moment: datetime | None) -> None:
        while pending and (moment is None or pending[0].accepted_time <= moment):
            for line in pending.pop(0).lines:
                stock[line.product_id] = stock.get(line.product_id, 0) + line.quantity

    for arrived, terminal_id in _customer_arrivals(world, shop, shift, rng):
        restock_until(arrived)
        on_shelf, list_price, unit_price = shelf_at(arrived)
        in_stock = [p for p in on_shelf if stock.get(p.product_id, 0) > 0]
        if not in_stock:
            sales.customers_turned_away += 1
            continue
        seq = len(sales.receipts) + 1
        if seq >= RECEIPTS_PER_SHIFT_LIMIT:
            raise ValueError(f"more than {RECEIPTS_PER_SHIFT_LIMIT - 1} receipts in one shift of shop {shop.shop_id}")
        transaction_id = shift.code * RECEIPTS_PER_SHIFT_LIMIT + seq
        values, weights = _fewer_more_likely(min(model.max_lines_per_receipt, len(in_stock)))
        picked = rng.sample(in_stock, rng.choices(values, weights)[0])
        lines = []
        for line_no, product in enumerate(picked, start=1):
            pid = product.product_id
            values, weights = _fewer_more_likely(min(model.max_units_per_line, stock[pid]))
            quantity = rng.choices(values, weights)[0]
            stock[pid] -= quantity
            if stock[pid] == 0:
                sales.products_sold_out.add(pid)
            lines.append(ReceiptLine(
                item_id=transaction_id * 100 + line_no, product_id=pid, quantity=quantity,
                unit_price=unit_price[pid], product_name=product.name, product_barcode=product.barcode,
                category_id=product.category_id, category_name=product.category_name,
                product_price=list_price[pid], product_discount=product.discount,
            ))
        amount = round_money(sum((line.unit_price * line.quantity for line in lines), Decimal("0")))
        loyalty = rng.choices(loyalty_values, loyalty_weights)[0]
        sales.receipts.append(Receipt(
            transaction_id=transaction_id, terminal_id=terminal_id, cashier_id=cashier_at[terminal_id],
            transaction_time=arrived, amount=amount, loyalty_discount=loyalty, discount_type=DISCOUNT_TYPE,
            total_amount=round_money(amount * (1 - loyalty)),
            payment_method=rng.choices(methods, method_weights)[0], lines=tuple(lines),
        ))
    restock_until(None)
    sales.closing_stock = stock
    return sales
