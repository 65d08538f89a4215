"""The catalogue messages of docs/contracts.md's topics, parsed strictly at the edge.

A message that does not parse (bad JSON, wrong types, values out of range, unknown or missing
fields) is not guessed at: ``parse_catalogue_message`` returns the reason, and the upsert run
sets it aside as a dead letter.

Prices are per city (docs/contracts.md defect 1): a product message is accepted with a ``city`` naming
whose price it carries, and a shop takes the price only when that is its city. A product message
without ``city`` still carries valid product fields, so it is applied as a description-only
change: name, description, category, barcode and deletion go to every shop, the price to none,
and the run counts it under ``price_without_city``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError

from rossmann_local.domain.catalogue import STORABLE_TEXT, Discount, Price, UtcTimestamp, storable_text
from rossmann_local.domain.topics import (
    CATEGORY_TOPIC,
    DEAD_LETTER_TOPIC,
    PRODUCT_DESCRIPTION_TOPIC,
    PRODUCT_TOPIC,
    STOCK_TOPIC,
)

Id = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
Name = Annotated[str, Field(strict=True, min_length=1, max_length=255, json_schema_extra=STORABLE_TEXT),
                 AfterValidator(storable_text)]
Description = Annotated[str | None, Field(strict=True, max_length=2048, json_schema_extra=STORABLE_TEXT),
                        AfterValidator(lambda v: v and storable_text(v))]
MAX_MESSAGE_BYTES = 64 * 1024


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoryMessage(_Message):
    """``local_db_upsert_category``: a category as it is from ``updated_at_utc`` on."""

    category_id: Id
    name: Name
    description: Description = None
    is_deleted: StrictBool = False
    updated_at_utc: UtcTimestamp


class ProductDescriptionMessage(_Message):
    """``local_db_update_product_desc``: the product without price and discount."""

    product_id: Id
    name: Name
    description: Description = None
    barcode: Annotated[str, Field(strict=True, pattern=r"^\d{12}$")]
    category_id: Id
    is_deleted: StrictBool = False
    updated_at_utc: UtcTimestamp


class ProductMessage(ProductDescriptionMessage):
    """``local_db_upsert_product``: the product with the price and discount of ``city``."""

    price: Price
    discount: Discount
    city: Name | None = None


class StockLevelsMessage(_Message):
    """``oltp_update_product_quantity``, keyed by shop id: the absolute stock of the products whose
    level changed since the shop's previous checkpoint. ``sequence`` (minutes since 1970 of the
    checkpoint) is the same on every re-send, so a consumer drops a repeat by (shop_id, sequence,
    part); a checkpoint too big for one message goes as ``parts`` messages of consecutive product id
    ranges."""

    shop_id: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,9}$", description="the shop's id, as text")]
    checkpoint_utc: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
                                         description="the simulated moment of the levels, UTC")]
    sequence: Annotated[int, Field(strict=True, ge=0)]
    part: Annotated[int, Field(strict=True, ge=1)]
    parts: Annotated[int, Field(strict=True, ge=1)]
    updated_products: Annotated[dict[Annotated[str, Field(pattern=r"^[1-9][0-9]{0,9}$")],
                                     Annotated[int, Field(strict=True, ge=0)]],
                                Field(description="product id (as text) -> units in stock, never below 0")]


class DeadLetterMessage(_Message):
    """``rossmann_local_dead_letters``, keyed ``<topic>:<partition>:<offset>``: a catalogue message a
    shop could not use, set aside with the reason (and its first 64 KiB, as text) instead of lost."""

    source_topic: str
    source_partition: Annotated[int, Field(strict=True, ge=0)]
    source_offset: Annotated[int, Field(strict=True, ge=0)]
    reason: str
    payload: str | None


CatalogueMessage = CategoryMessage | ProductDescriptionMessage | ProductMessage
_MODELS: dict[str, type[CatalogueMessage]] = {
    CATEGORY_TOPIC: CategoryMessage,
    PRODUCT_DESCRIPTION_TOPIC: ProductDescriptionMessage,
    PRODUCT_TOPIC: ProductMessage,
}


# The message model of every topic: the code parses with it, and contracts/ holds its JSON Schema.
TOPIC_MESSAGES: dict[str, type[_Message]] = {**_MODELS, STOCK_TOPIC: StockLevelsMessage,
                                             DEAD_LETTER_TOPIC: DeadLetterMessage}


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    reason: str
    payload: bytes | None

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def simulated_time(self) -> datetime | None:
        """The ``updated_at_utc`` the message carried, when it reads as a time (else none)."""
        return stated_time(self.payload)

    def to_json(self) -> bytes:
        text = None if self.payload is None else self.payload[:MAX_MESSAGE_BYTES].decode("utf-8", "replace")
        return json.dumps({"source_topic": self.topic, "source_partition": self.partition,
                           "source_offset": self.offset, "reason": self.reason, "payload": text}).encode()


def stated_time(payload: bytes | str | None) -> datetime | None:
    """The ``updated_at_utc`` a catalogue message's JSON states, in UTC, or None when it states none
    that reads as a time (not JSON, no such field, not a time)."""
    try:
        stamp = json.loads(payload or b"").get("updated_at_utc")
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, AttributeError, TypeError):
        return None


def parse_catalogue_message(topic: str, payload: bytes | None) -> CatalogueMessage | str:
    """The message, or the reason it cannot be used."""
    model = _MODELS.get(topic)
    if model is None:
        return f"not a catalogue topic: {topic}"
    if payload is None:
        return "empty message (tombstone)"
    if len(payload) > MAX_MESSAGE_BYTES:
        return f"message of {len(payload)} bytes, more than {MAX_MESSAGE_BYTES}"
    try:
        # The model's own validator (what model_validate_json calls, less the wrapper's keyword handling:
        # a twentieth of a message's parse, and a range holds messages by the hundred thousand).
        message: CatalogueMessage = model.__pydantic_validator__.validate_json(payload)
        return message
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in errors[:5])
