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
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError

from rossmann_local.domain.catalogue import Discount, Price, UtcTimestamp, storable_text
from rossmann_local.domain.topics import CATEGORY_TOPIC, PRODUCT_DESCRIPTION_TOPIC, PRODUCT_TOPIC

Id = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
Name = Annotated[str, Field(strict=True, min_length=1, max_length=255), AfterValidator(storable_text)]
Description = Annotated[str | None, Field(strict=True, max_length=2048),
                        AfterValidator(lambda v: v and storable_text(v))]
MAX_MESSAGE_BYTES = 64 * 1024


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoryMessage(_Message):
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


CatalogueMessage = CategoryMessage | ProductDescriptionMessage | ProductMessage
_MODELS: dict[str, type[CatalogueMessage]] = {
    CATEGORY_TOPIC: CategoryMessage,
    PRODUCT_DESCRIPTION_TOPIC: ProductDescriptionMessage,
    PRODUCT_TOPIC: ProductMessage,
}


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

    def to_json(self) -> bytes:
        text = None if self.payload is None else self.payload[:MAX_MESSAGE_BYTES].decode("utf-8", "replace")
        return json.dumps({"source_topic": self.topic, "source_partition": self.partition,
                           "source_offset": self.offset, "reason": self.reason, "payload": text}).encode()


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
        return model.model_validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in errors[:5])
