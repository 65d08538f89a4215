"""The expected answers: what each shop's day must come to, from the simulation itself.

Not read back from anything the chain wrote: the chain's catalogue (every version the Sync API
holds, what the shops' caches are built from) goes into a scratch history in memory, and the shop's
shifts are simulated one after another from the world's first day (``simulate_shifts``), as an
in-order run of the chain makes them. A pipeline that handled every duplicate, out-of-order or
malformed message right arrives at the same figures; the reports are checked against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import create_engine

from rossmann_local.domain.catalogue import BEGINNING_OF_TIME, CategoryRecord, ProductRecord
from rossmann_local.domain.shifts import ShiftWindow, shifts_of_day
from rossmann_local.domain.simulation import simulate_shifts
from rossmann_local.domain.world import Shop, World
from rossmann_local.reports.analytics import shifts_delivery_totals, shifts_transactions_totals
from rossmann_local.reports.expected import replace_expected_day
from rossmann_local.reports.schema import EXPECTED_CATALOGUE, EXPECTED_SHOP_DAY
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.history import record_synced, shelf_at, shelf_timeline
from rossmann_local.shop_db.models import ShopBase


@dataclass(frozen=True)
class ExpectedDay:
    """One shop's day as it must be: sales, deliveries and the stock left after its last shift."""

    shop_id: int
    day: date
    receipts: int
    lines: int
    units_sold: int
    revenue: Decimal
    units_delivered: int
    closing_stock: int
    revenue_summed_per_line: Decimal  # the original dashboards' over-count (each total once per line)


@dataclass(frozen=True)
class ExpectedProduct:
    """A product on sale at the close of the shop's day, at its last version then."""

    shop_id: int
    day: date
    product_id: int
    product_name: str
    category_id: int
    category_name: str
    price: Decimal
    discount: Decimal


@dataclass(frozen=True)
class ExpectedShop:
    days: list[ExpectedDay]
    catalogue: list[ExpectedProduct]


def shifts_through(world: World, last_day: date) -> list[ShiftWindow]:
    """Every shift from the world's first day through ``last_day``, in order."""
    return [shift for n in range((last_day - world.start_date).days + 1)
            for shift in shifts_of_day(world, world.start_date + timedelta(days=n))]


def expected_shop(world: World, shop: Shop, days: Sequence[date], categories: Sequence[CategoryRecord],
                  products: Sequence[ProductRecord]) -> ExpectedShop:
    """The shop's expected answers on ``days``, from the chain's catalogue (``categories``, and
    ``products`` with the prices of the shop's city, every version)."""
    wanted = set(days)
    engine = create_engine("sqlite://")  # a scratch history: nothing of the shop's own database
    try:
        ShopBase.metadata.create_all(engine)
        with engine.begin() as conn:
            record_synced(conn, shop.city, categories, products)
            found: dict[date, ExpectedDay] = {}
            catalogue: list[ExpectedProduct] = []
            totals = dict.fromkeys(("receipts", "lines", "units", "delivered"), 0)
            revenue = per_line = Decimal(0)
            for simulated in simulate_shifts(world, shop, shifts_through(world, max(days)),
                                             lambda shift: shelf_timeline(conn, shift)):
                day, sales = simulated.shift.local_date, simulated.sales
                if day not in wanted:
                    continue
                totals["receipts"] += len(sales.receipts)
                totals["lines"] += sales.lines
                totals["units"] += sales.units
                totals["delivered"] += sum(line.quantity for d in simulated.deliveries for line in d.lines)
                revenue += sales.revenue
                per_line += sales.revenue_summed_per_line
                if simulated.shift == shifts_of_day(world, day)[-1]:
                    found[day] = ExpectedDay(shop.shop_id, day, totals["receipts"], totals["lines"], totals["units"],
                                             revenue, totals["delivered"], sum(sales.closing_stock.values()),
                                             per_line)
                    catalogue += [ExpectedProduct(shop.shop_id, day, p.product_id, p.name, p.category_id,
                                                  p.category_name, p.price, p.discount)
                                   for p in shelf_at(conn, simulated.shift.end)]
                    totals = dict.fromkeys(totals, 0)
                    revenue = per_line = Decimal(0)
    finally:
        engine.dispose()
    return ExpectedShop([found[d] for d in sorted(wanted)], catalogue)


def expected_shops(world: World, days: Sequence[date], sync_api: SyncApiClient) -> list[ExpectedShop]:
    """Every shop's expected answers on ``days``, from every catalogue version the Sync API holds."""
    categories = sync_api.categories_since(BEGINNING_OF_TIME)
    return [expected_shop(world, shop, days, categories, sync_api.products_since(shop.shop_id, BEGINNING_OF_TIME))
            for shop in world.shops]


def shops_without_their_earlier_days(world: World, day: date, shop_databases: ShopDatabases) -> list[int]:
    """The shops whose database lacks a shift of the world's days before ``day`` (a later day run
    alone on a fresh data dir): their day opened with other stock than the expected answers assume."""
    first = shifts_of_day(world, day)[0].start
    earlier = len(shifts_through(world, day - timedelta(days=1))) if day > world.start_date else 0
    lacking = []
    for shop in world.shops:
        with shop_databases.transaction(shop.shop_id) as conn:
            if ledger.shifts_sold_before(conn, first) < earlier:
                lacking.append(shop.shop_id)
    return lacking


COMPARED = ("receipts", "lines", "units_sold", "revenue", "units_delivered")


@dataclass(frozen=True)
class DayCompared:
    """One shop's day: the expected answers beside what the chain's reports in ClickHouse hold."""

    expected: ExpectedDay
    reported: dict[str, int | Decimal]

    @property
    def differing(self) -> list[str]:
        return [name for name in COMPARED if getattr(self.expected, name) != self.reported[name]]


def send_expected(world: World, clickhouse: ClickHouseReports, day: date, shops: Sequence[ExpectedShop]
                  ) -> list[DayCompared]:
    """The day's expected answers into ``expected_shop_day`` and ``expected_catalogue``, then each shop's
    day beside the totals of its shifts in the transactions and delivery reports: one ClickHouse hold."""
    expected = [d for s in shops for d in s.days if d.day == day]
    keys = {e.shop_id: [(e.shop_id, shift.start) for shift in shifts_of_day(world, day)] for e in expected}
    every = [key for shifts in keys.values() for key in shifts]
    with clickhouse.client() as client:
        replace_expected_day(client, EXPECTED_SHOP_DAY, day, [astuple(d) for d in expected])
        replace_expected_day(client, EXPECTED_CATALOGUE, day,
                             [astuple(p) for s in shops for p in s.catalogue if p.day == day])
        sales = shifts_transactions_totals(client, every)
        delivered = shifts_delivery_totals(client, every)
    compared = []
    for e in expected:
        shifts = keys[e.shop_id]
        reported: dict[str, int | Decimal] = {
            "receipts": sum(int(sales[k]["receipts"]) for k in shifts),
            "lines": sum(int(sales[k]["lines"]) for k in shifts),
            "units_sold": sum(int(sales[k]["units"]) for k in shifts),
            "revenue": sum((Decimal(sales[k]["revenue"]) for k in shifts), Decimal(0)),
            "units_delivered": sum(delivered[k]["units"] for k in shifts)}
        compared.append(DayCompared(e, reported))
    return compared
