"""The Sync API's JSON, as pydantic models: one definition for the stand-in that sends it and the
shops that receive it. Money travels as JSON numbers and lives as Decimal inside the project."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

# The first sync of a shop asks for everything changed since the beginning of time.
BEGINNING_OF_TIME = datetime(1, 1, 1, tzinfo=UTC)


# Must carry a zone (checked by pydantic itself); stored as UTC by the database column type, and
# written as UTC by ``iso_z`` and pydantic's JSON, so no per-message conversion is needed here.
UtcTimestamp = AwareDatetime
Price = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("9999999999.99"), decimal_places=2),
    PlainSerializer(float, return_type=float, when_used="json"),
]
Discount = Annotated[
    Decimal,
    Field(ge=0, le=1, decimal_places=4),
    PlainSerializer(float, return_type=float, when_used="json"),
]


def iso_z(value: datetime) -> str:
    """The wire format of docs/contracts.md: ISO-8601 in UTC with a Z, microseconds when there are any."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Record(BaseModel):
    # Unknown fields are ignored so upstream can add fields without breaking the shops.
    model_config = ConfigDict(extra="ignore", frozen=True)


class CategoryRecord(_Record):
    category_id: int = Field(ge=1, le=2**31 - 1)
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=2048)
    is_deleted: bool = False
    updated_at_utc: UtcTimestamp


class ProductRecord(_Record):
    """A product with the price and discount of one city (the city of the shop that asked)."""

    product_id: int = Field(ge=1, le=2**31 - 1)
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=2048)
    barcode: str = Field(pattern=r"^\d{12}$")
    category_id: int = Field(ge=1, le=2**31 - 1)
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
