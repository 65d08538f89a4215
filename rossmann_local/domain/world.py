"""The simulated chain: cities, shops, terminals, staff, catalogue and the shift layout.

A World is plain data. The reference world of the contracts (docs/contracts.md) is the default,
with any number of shops spread over its cities like the reference five; which world a run uses is
a setting (``settings.load_world``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rossmann_local.domain.catalogue import MAX_PRICE, Description, Id, Name

Role = Literal["admin", "cashier", "security", "courier"]
Fraction = Annotated[Decimal, Field(ge=0, le=1, max_digits=5, decimal_places=4)]
Money = Annotated[Decimal, Field(gt=0, le=MAX_PRICE, max_digits=12, decimal_places=2)]


class UnknownShop(LookupError):
    """A shop id the world does not have (a partition key or an argument from outside)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class City(_Frozen):
    name: str
    country: str


class Employee(_Frozen):
    employee_id: Id
    first_name: str
    last_name: str
    email: str
    role: Role


class Shop(_Frozen):
    shop_id: Id
    city: str
    terminal_ids: tuple[Id, ...] = Field(min_length=1)
    admin_id: Id
    cashier_ids: tuple[Id, ...] = Field(min_length=1)


class Category(_Frozen):
    category_id: Id
    name: Name
    description: Description = None


class CityPrice(_Frozen):
    price: Money
    discount: Fraction = Decimal("0")


class Product(_Frozen):
    product_id: Id
    name: Name
    description: Description = None
    barcode: str = Field(pattern=r"^\d{12}$")
    category_id: Id
    prices: dict[str, CityPrice]


class ShiftLayout(_Frozen):
    """Opening hours cut into consecutive shifts; one Dagster partition per shift and shop.

    The default is two 6-hour shifts, 09:00-15:00 and 15:00-21:00, so each of the reference
    deliveries (10:00, 18:00) falls in its own shift and no window runs overnight.
    """

    opens: time = time(9, 0)
    closes: time = time(21, 0)
    shift_starts: tuple[time, ...] = (time(9, 0), time(15, 0))

    @model_validator(mode="after")
    def _check(self) -> ShiftLayout:
        starts = self.shift_starts
        if not starts or starts[0] != self.opens:
            raise ValueError("the first shift must start when the shop opens")
        if list(starts) != sorted(set(starts)) or starts[-1] >= self.closes:
            raise ValueError("shift starts must increase and lie before closing time")
        if any(t.minute != self.opens.minute or t.second for t in (*starts, self.closes)):
            raise ValueError("shift starts and closing time must share one minute of the hour")
        return self

    @property
    def cron_schedule(self) -> str:
        """Shift starts plus closing time: the closing tick only ends the last window (excluded below)."""
        hours = ",".join(str(t.hour) for t in (*self.shift_starts, self.closes))
        return f"{self.opens.minute} {hours} * * *"

    @property
    def exclusions(self) -> list[str]:
        """The window that would start at closing time and run overnight is not a shift."""
        return [f"{self.closes.minute} {self.closes.hour} * * *"]


class SalesModel(_Frozen):
    """The distributions of docs/contracts.md's simulated day."""

    customer_interval_minutes: float = Field(5.0, gt=0)
    max_lines_per_receipt: int = Field(8, ge=1, le=99)
    max_units_per_line: int = Field(5, ge=1)
    loyalty_discounts: dict[str, float] = {"0": 0.6, "0.05": 0.15, "0.1": 0.12, "0.2": 0.08, "0.3": 0.05}
    payment_methods: dict[str, float] = {"Cash": 0.3, "Credit Card": 0.4, "Debit Card": 0.3}
    delivery_times: tuple[time, ...] = (time(10, 0), time(18, 0))
    # Replenishment (an (s, S) policy): each shop gives each product a target level, drawn from the
    # seed in target_stock_min..max by target_stock_step and fixed for the world's life, and a reorder
    # point of reorder_point_share of it. At a shift's start every product on the shelf at or below
    # its reorder point is ordered up to its target; the courier brings it at the shift's first
    # delivery time. Stock so stays within 0..target; what sells before the courier may sell out.
    target_stock_min: int = Field(200, ge=1)
    target_stock_max: int = Field(490, ge=1)
    target_stock_step: int = Field(10, ge=1)
    reorder_point_share: Decimal = Field(Decimal("0.5"), ge=0, lt=1, max_digits=5, decimal_places=4)
    stock_report_interval_minutes: int = Field(50, ge=1)
    inflation_rate: Decimal = Decimal("0.05")
    inflation_period_days: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SalesModel:
        if self.target_stock_min > self.target_stock_max:
            raise ValueError("target_stock_min must not exceed target_stock_max")
        return self


# How far after the world's last moment a catalogue change may still be dated (clocks of real
# senders drift); anything later is refused at the edge, so no message can freeze a row for ever.
MAX_CLOCK_SKEW = timedelta(hours=1)


class World(_Frozen):
    timezone: str = "Europe/Berlin"
    start_date: date = date(2026, 6, 1)
    days: int = Field(365, ge=1, le=36_500)  # how long the simulated world runs, from start_date
    seed: int = 42
    cities: tuple[City, ...]
    courier_id: int
    employees: tuple[Employee, ...]
    shops: tuple[Shop, ...] = Field(min_length=1)
    categories: tuple[Category, ...]
    products: tuple[Product, ...]
    shift_layout: ShiftLayout = ShiftLayout()
    sales: SalesModel = SalesModel()

    @model_validator(mode="after")
    def _check_references(self) -> World:
        city_names = {c.name for c in self.cities}
        staff = {e.employee_id: e for e in self.employees}
        category_ids = {c.category_id for c in self.categories}
        problems: list[str] = []
        if staff.get(self.courier_id) is None or staff[self.courier_id].role != "courier":
            problems.append(f"courier {self.courier_id} is not an employee with role courier")
        seen_terminals: set[int] = set()
        for shop in self.shops:
            if shop.city not in city_names:
                problems.append(f"shop {shop.shop_id} is in unknown city {shop.city!r}")
            if seen_terminals & set(shop.terminal_ids):
                problems.append(f"shop {shop.shop_id} reuses terminal ids of another shop")
            seen_terminals |= set(shop.terminal_ids)
            for role, ids in (("admin", (shop.admin_id,)), ("cashier", shop.cashier_ids)):
                if any(i not in staff or staff[i].role != role for i in ids):
                    problems.append(f"shop {shop.shop_id}: {ids} are not all employees with role {role}")
        for product in self.products:
            if product.category_id not in category_ids:
                problems.append(f"product {product.product_id} has unknown category {product.category_id}")
            if missing := city_names - product.prices.keys():
                problems.append(f"product {product.product_id} has no price in {sorted(missing)}")
        if len({s.shop_id for s in self.shops}) != len(self.shops):
            problems.append("shop ids repeat")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @cached_property
    def _shops_by_id(self) -> dict[int, Shop]:
        return {s.shop_id: s for s in self.shops}

    @cached_property
    def _cities_by_name(self) -> dict[str, City]:
        return {c.name: c for c in self.cities}

    @property
    def end_date(self) -> date:
        """The world's last simulated day."""
        return self.start_date + timedelta(days=self.days - 1)

    @cached_property
    def first_moment(self) -> datetime:
        """Midnight of the world's first day, in UTC: when the seeded catalogue takes effect."""
        return datetime.combine(self.start_date, time(0), tzinfo=ZoneInfo(self.timezone)).astimezone(UTC)

    @cached_property
    def earliest_effective_time(self) -> datetime:
        """The earliest time a catalogue change may take effect: the world's start less ``MAX_CLOCK_SKEW``."""
        return self.first_moment - MAX_CLOCK_SKEW

    @cached_property
    def latest_effective_time(self) -> datetime:
        """The latest time a catalogue change may take effect: the world's end plus ``MAX_CLOCK_SKEW``."""
        after_last_day = datetime.combine(self.end_date + timedelta(days=1), time(0), tzinfo=ZoneInfo(self.timezone))
        return after_last_day.astimezone(UTC) + MAX_CLOCK_SKEW

    def dated_outside(self, moment: datetime) -> str | None:
        """Why a change dated ``moment`` is refused (before the world's start or after its end, beyond
        the clock skew), or None. After: keeping the newest version, it would freeze its row for ever;
        before: it would rewrite what the world started with, which no change of the world can."""
        if self.earliest_effective_time <= moment <= self.latest_effective_time:
            return None
        skew = f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes of clock skew"
        if moment < self.earliest_effective_time:
            return f"dated {moment.isoformat()}, before the world's first day ({self.start_date}) less {skew}"
        if moment > self.latest_effective_time:
            return f"dated {moment.isoformat()}, after the world's end ({self.end_date}) plus {skew}"
        return None

    @property
    def shop_ids(self) -> list[int]:
        return [s.shop_id for s in self.shops]

    def shop(self, shop_id: int) -> Shop:
        try:
            return self._shops_by_id[shop_id]
        except KeyError:
            raise UnknownShop(f"shop {shop_id} is not in the configured world (shops {_id_ranges(self.shop_ids)})"
                              ) from None

    def city_of(self, shop: Shop) -> City:
        return self._cities_by_name[shop.city]


def _id_ranges(ids: list[int]) -> str:
    return f"{min(ids)}..{max(ids)}" if ids == list(range(min(ids), max(ids) + 1)) else str(ids)


# --- the reference world -------------------------------------------------------------------------

_REFERENCE_CITIES = (
    City(name="Berlin", country="Germany"),
    City(name="Nurnberg", country="Germany"),
    City(name="La Nucia", country="Spain"),
)
# Shops are spread over the cities in the reference proportion: 1 Berlin, 2 Nurnberg, 2 La Nucia.
_CITY_CYCLE = ("Berlin", "Nurnberg", "Nurnberg", "La Nucia", "La Nucia")
_CITY_PRICE_FACTOR = {"Berlin": Decimal("1.00"), "Nurnberg": Decimal("0.97"), "La Nucia": Decimal("0.93")}

_CATEGORIES = (
    Category(category_id=1, name="Baby & Toys", description="Nappies, wipes and toys for the little ones"),
    Category(category_id=2, name="Health", description="Vitamins, supplements and first aid"),
    Category(category_id=3, name="Household", description="Cleaning and kitchen supplies"),
    Category(category_id=4, name="Decor", description="Candles, frames and small decorations"),
    Category(category_id=5, name="Care and fragrance", description="Body care and perfume"),
)

# product_id, name, category, barcode, Berlin price, per-city discounts (Berlin, Nurnberg, La Nucia)
_PRODUCTS = (
    (1, "Babylove Nappies Size 4, 42 pcs", 1, "410800986129", "9.95", ("0", "0", "0.1")),
    (2, "Wooden Stacking Rings", 1, "410800986136", "12.99", ("0", "0.05", "0")),
    (3, "Baby Wipes Sensitive, 80 pcs", 1, "410800986143", "1.95", ("0", "0", "0")),
    (4, "Vitamin C 1000 Effervescent", 2, "410800986150", "2.45", ("0.1", "0", "0")),
    (5, "Magnesium 400 Capsules", 2, "410800986167", "4.99", ("0", "0", "0.15")),
    (6, "Elastic Bandage 8 cm", 2, "410800986174", "3.29", ("0", "0", "0")),
    (7, "Dishwasher Tabs Classic, 40 pcs", 3, "410800986181", "6.99", ("0", "0.1", "0")),
    (8, "Kitchen Towels, 4 rolls", 3, "410800986198", "3.49", ("0", "0", "0")),
    (9, "All-Purpose Cleaner Lemon", 3, "410800986204", "1.65", ("0.05", "0", "0")),
    (10, "Scented Candle Vanilla", 4, "410800986211", "5.99", ("0", "0", "0.2")),
    (11, "Photo Frame 13x18", 4, "410800986228", "7.49", ("0", "0", "0")),
    (12, "Shower Gel Aloe Vera", 5, "410800986235", "0.95", ("0", "0", "0")),
    (13, "Hand Cream Intensive", 5, "410800986242", "2.19", ("0", "0.05", "0")),
    (14, "Eau de Toilette Fresh, 50 ml", 5, "410800986259", "14.95", ("0.1", "0", "0")),
)

_FIRST_NAMES = ("Stannis", "Arya", "Jon", "Brienne", "Davos", "Sansa", "Tyrion", "Samwell", "Catelyn",
                "Jorah", "Gendry", "Ygritte", "Podrick", "Lyanna", "Theon", "Missandei", "Bran")
_LAST_NAMES = ("Baratheon", "Stark", "Snow", "Tarth", "Seaworth", "Lannister", "Tarly", "Tully",
               "Mormont", "Waters", "Greyjoy", "Naharis", "Payne")


def _employee(employee_id: int, role: Role) -> Employee:
    first = _FIRST_NAMES[(employee_id - 2) % len(_FIRST_NAMES)] if employee_id > 1 else "Hodor"
    last = _LAST_NAMES[(employee_id - 2) // len(_FIRST_NAMES) % len(_LAST_NAMES)] if employee_id > 1 else "Courier"
    return Employee(employee_id=employee_id, first_name=first, last_name=last, role=role,
                    email=f"{first}.{last}.{employee_id}@rossmann.local".lower())


def reference_world(shop_count: int = 5, terminals_per_shop: int = 3, cashiers_per_shop: int = 3) -> World:
    """docs/contracts.md's world; ``shop_count`` shops spread over the three cities like the reference five.

    Terminal ids are global (shop 1 has 1-3, shop 2 has 4-6, ...); employee 1 is the courier and each
    shop has one admin then its cashiers (ids 2-21 for the five reference shops).
    """
    employees = [_employee(1, "courier")]
    shops = []
    per_shop_staff = 1 + cashiers_per_shop
    for shop_id in range(1, shop_count + 1):
        first_staff = 2 + (shop_id - 1) * per_shop_staff
        employees.append(_employee(first_staff, "admin"))
        employees.extend(_employee(first_staff + 1 + i, "cashier") for i in range(cashiers_per_shop))
        first_terminal = (shop_id - 1) * terminals_per_shop + 1
        shops.append(Shop(
            shop_id=shop_id,
            city=_CITY_CYCLE[(shop_id - 1) % len(_CITY_CYCLE)],
            terminal_ids=tuple(range(first_terminal, first_terminal + terminals_per_shop)),
            admin_id=first_staff,
            cashier_ids=tuple(range(first_staff + 1, first_staff + 1 + cashiers_per_shop)),
        ))
    products = [
        Product(
            product_id=pid, name=name, category_id=cat, barcode=barcode,
            description=f"{name}: a Rossmann own-brand article",
            prices={
                city.name: CityPrice(
                    price=(Decimal(berlin_price) * _CITY_PRICE_FACTOR[city.name]).quantize(Decimal("0.01")),
                    discount=Decimal(discounts[i]),
                )
                for i, city in enumerate(_REFERENCE_CITIES)
            },
        )
        for pid, name, cat, barcode, berlin_price, discounts in _PRODUCTS
    ]
    return World(cities=_REFERENCE_CITIES, courier_id=1, employees=tuple(employees), shops=tuple(shops),
                 categories=_CATEGORIES, products=tuple(products))
