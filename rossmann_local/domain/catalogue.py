"""The Sync API's JSON, as pydantic models: one definition for the stand-in that sends it and the
shops that receive it. Money travels as JSON numbers and lives as Decimal inside the project."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic_core import PydanticCustomError

# The first sync of a shop asks for everything changed since the beginning of time.
BEGINNING_OF_TIME = datetime(1, 1, 1, tzinfo=UTC)


def _in_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# Must carry a zone (checked by pydantic itself), and is held in UTC (``datetime.UTC``) from the edge
# on: pydantic gives each parsed time a zone object of its own, which every comparison, sort and hash
# of two times then asks for its offset (a batch's fold, sort and history compare times by the
# hundred thousand, at several times the cost of this one conversion).
UtcTimestamp = Annotated[AwareDatetime, AfterValidator(_in_utc)]
# The highest price a shop takes: a receipt holds at most 8 x 5 units, so a shift's revenue stays far
# inside the shop database's numeric(12, 2) even after years of price drift (9,999,999,999.99 once
# overflowed every shop's shift).
MAX_PRICE = Decimal("10000.00")


def _at_most_places(places: int) -> AfterValidator:
    """pydantic's ``decimal_places`` check, with its error, at a third of its cost: pydantic normalizes
    each amount and takes its digits apart, and a range of messages holds two amounts a message. An
    amount within the bounds (checked before) has no more places when rounding to them keeps it."""
    step = Decimal(1).scaleb(-places)

    def check(value: Decimal) -> Decimal:
        if value != value.quantize(step):
            raise PydanticCustomError("decimal_max_places",
                                      "Decimal input should have no more than {decimal_places} decimal places",
                                      {"decimal_places": places})
        return value

    return AfterValidator(check)


Price = Annotated[
    Decimal,
    Field(ge=0, le=MAX_PRICE),
    _at_most_places(2),
    PlainSerializer(float, return_type=float, when_used="json"),
]
Discount = Annotated[
    Decimal,
    Field(ge=0, le=1),
    _at_most_places(4),
    PlainSerializer(float, return_type=float, when_used="json"),
]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> str:
    """Text every shop database can store: Postgres refuses NUL in text, and a lone surrogate is no
    character at all (it cannot be encoded as UTF-8)."""
    if "\x00" in value:
        raise ValueError("text must not contain a NUL (0x00) character")
    if not value.isascii() and _LONE_SURROGATE.search(value):
        raise ValueError("text must not contain a lone surrogate")
    return value


# How the contracts say it (a lone surrogate cannot even be written in UTF-8 JSON or a URL).
STORABLE_TEXT = {"pattern": "^[^\\u0000]*$"}
Name = Annotated[str, Field(min_length=1, max_length=255, json_schema_extra=STORABLE_TEXT),
                 AfterValidator(storable_text)]
Description = Annotated[str | None, Field(max_length=2048, json_schema_extra=STORABLE_TEXT),
                        AfterValidator(lambda v: v and storable_text(v))]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]  # the shop database's integer column


def iso_z(value: datetime) -> str:
    """The wire format of docs/contracts.md: ISO-8601 in UTC with a Z, microseconds when there are any."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Record(BaseModel):
    # Unknown fields are ignored so upstream can add fields without breaking the shops.
    model_config = ConfigDict(extra="ignore", frozen=True)


class CategoryRecord(_Record):
    category_id: Id
    name: Name
    description: Description = None
    is_deleted: bool = False
    updated_at_utc: UtcTimestamp


class ProductRecord(_Record):
    """A product with the price and discount of one city (the city of the shop that asked)."""

    product_id: Id
    name: Name
    description: Description = None
    barcode: str = Field(pattern=r"^\d{12}$")
    category_id: Id
    price: Price
    discount: Discount
    is_deleted: bool = False
    updated_at_utc: UtcTimestamp


class ShopIdentity(BaseModel):
    shop_id: int
    country_name: str
    city_name: str


class EmployeeIdentity(BaseModel):
    employee_id: int
    first_name: str
    last_name: str
    role: Literal["admin", "cashier", "security", "courier"]
