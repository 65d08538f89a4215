"""Hostile input, property-based (hypothesis): catalogue messages and Sync API answers of any shape
never crash the parser, the upsert run or the client; every bad message is dead-lettered with its
reason, every good one applied."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy import select

from rossmann_local.domain.catalogue import MAX_PRICE, CategoryRecord, Discount, Price
from rossmann_local.domain.messages import parse_catalogue_message
from rossmann_local.domain.topics import CATALOGUE_TOPICS, CATEGORY_TOPIC
from rossmann_local.domain.world import World, reference_world
from rossmann_local.resources.kafka import RawMessage
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient, SyncApiError
from rossmann_local.shop.catalogue import apply_catalogue_messages
from rossmann_local.shop_db.cache import upsert_categories
from rossmann_local.shop_db.models import Category
from rossmann_local.sync_api.server import LoopbackServer

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12)

VALID_PRODUCT = {"product_id": 7, "name": "Milk", "description": None, "barcode": "400000000007", "category_id": 2,
                 "price": 1.29, "discount": 0.0, "is_deleted": False, "updated_at_utc": "2026-06-01T10:00:00Z",
                 "city": "Berlin"}


@given(topic=st.sampled_from(CATALOGUE_TOPICS), payload=st.binary(max_size=300) | st.none())
@SETTINGS
def test_any_bytes_parse_to_a_message_or_a_reason(topic: str, payload: bytes | None) -> None:
    parsed = parse_catalogue_message(topic, payload)
    assert (isinstance(parsed, str) and parsed) or not isinstance(parsed, str)


@given(topic=st.sampled_from(CATALOGUE_TOPICS), value=json_values)
@SETTINGS
def test_any_json_parses_to_a_message_or_a_reason(topic: str, value: Any) -> None:
    parsed = parse_catalogue_message(topic, json.dumps(value).encode())
    assert (isinstance(parsed, str) and parsed) or not isinstance(parsed, str)


@given(field=st.sampled_from(sorted(VALID_PRODUCT)), value=json_values)
@SETTINGS
def test_one_wrong_field_in_a_product_message_is_refused_or_kept_within_its_rules(field: str, value: Any) -> None:
    message = {**VALID_PRODUCT, field: value}
    parsed = parse_catalogue_message("local_db_upsert_product", json.dumps(message).encode())
    if isinstance(parsed, str):
        return
    assert 1 <= parsed.product_id < 2**31 and 1 <= parsed.category_id < 2**31
    assert len(parsed.barcode) == 12 and parsed.barcode.isdigit() and parsed.name
    assert parsed.price >= 0 and 0 <= parsed.discount <= 1 and parsed.updated_at_utc.tzinfo is not None


# pydantic's own rule for the amounts: what the project's faster check must give, value and error alike.
PYDANTIC_PRICE = TypeAdapter(Annotated[Decimal, Field(ge=0, le=MAX_PRICE, decimal_places=2)])
PYDANTIC_DISCOUNT = TypeAdapter(Annotated[Decimal, Field(ge=0, le=1, decimal_places=4)])
OURS_AND_PYDANTICS = ((TypeAdapter(Price), PYDANTIC_PRICE), (TypeAdapter(Discount), PYDANTIC_DISCOUNT))
amounts = (st.decimals(min_value=-1, max_value=MAX_PRICE + 1, allow_nan=False, allow_infinity=False).map(str)
           | st.floats(min_value=-1, max_value=float(MAX_PRICE) + 1).map(repr)
           | st.sampled_from(["1.990", "1e-2", "100E-2", "0.005", "10000.00", "10000.001", "0E-9", "1.23456"]))


def _outcome(adapter: TypeAdapter[Decimal], text: str) -> Decimal | set[str]:
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        return {e["msg"] for e in exc.errors()}


@given(text=amounts)
@SETTINGS
def test_a_price_and_a_discount_are_taken_or_refused_as_pydantics_decimal_places_would(text: str) -> None:
    """Prices and discounts check their places by rounding (pydantic's ``decimal_places`` takes every
    amount apart): the same amounts pass, with the same value, and a wrong one is refused for its
    places with pydantic's words (one out of bounds too is refused for its bounds first)."""
    for ours, pydantics in OURS_AND_PYDANTICS:
        got, expected = _outcome(ours, text), _outcome(pydantics, text)
        if isinstance(expected, Decimal) or isinstance(got, Decimal):
            assert got == expected and str(got) == str(expected)
        elif not any("less than" in m or "greater than" in m for m in got):
            assert got == expected


def category(category_id: int, name: str, minute: int) -> bytes:
    stamp = datetime(2026, 6, 1, 10, tzinfo=UTC) + timedelta(minutes=minute)
    return json.dumps({"category_id": category_id, "name": name, "description": None, "is_deleted": False,
                       "updated_at_utc": stamp.isoformat().replace("+00:00", "Z")}).encode()


garbage = (st.binary(max_size=80).filter(lambda b: not b.strip().startswith(b"{"))
           | json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode())
           | st.builds(lambda extra: json.dumps({"category_id": 1, "unexpected": extra}).encode(), json_values))
# Known categories (the shops synced them), any storable name: text with a NUL or a lone surrogate is garbage.
good = st.builds(category, st.integers(1, 5),
                 st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30),
                 st.integers(0, 600))


@pytest.fixture(scope="module")
def shops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopDatabases]:
    databases = ShopDatabases(sqlite_dir=str(tmp_path_factory.mktemp("hostile-shops")))
    synced = [CategoryRecord(category_id=c.category_id, name=c.name, updated_at_utc=datetime(2026, 5, 31, tzinfo=UTC))
              for c in reference_world(2).categories]
    for shop_id in reference_world(2).shop_ids:
        with databases.transaction(shop_id) as conn:
            upsert_categories(conn, synced)  # what the shops' first sync would have brought
    yield databases
    databases.dispose()


@given(batch=st.lists(st.tuples(st.booleans(), good, garbage), min_size=1, max_size=25))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_an_upsert_run_dead_letters_every_bad_message_and_applies_every_good_one(
        shops: ShopDatabases, batch: list[tuple[bool, bytes, bytes]]) -> None:
    world: World = reference_world(2)
    payloads = [good_payload if is_good else bad_payload for is_good, good_payload, bad_payload in batch]
    raw = [RawMessage(CATEGORY_TOPIC, 0, offset, b"k", payload) for offset, payload in enumerate(payloads)]
    outcome = apply_catalogue_messages(world, shops, raw)
    bad = [offset for offset, (is_good, _, _) in enumerate(batch) if not is_good]
    assert sorted(int(letter.key.rsplit(":", 1)[1]) for letter in outcome.dead_letters) == bad
    assert all(letter.reason for letter in outcome.dead_letters)
    assert outcome.messages == len(raw)
    newest: dict[int, dict[str, Any]] = {}
    for is_good, payload, _ in batch:
        if is_good:
            message = json.loads(payload)
            current = newest.get(message["category_id"])
            if current is None or message["updated_at_utc"] >= current["updated_at_utc"]:
                newest[message["category_id"]] = message
    for shop_id in world.shop_ids:
        with shops.transaction(shop_id) as conn:
            stored = dict(conn.execute(select(Category.category_id, Category.updated_at_utc)
                                       .where(Category.category_id.in_(list(newest)))).all())
        for category_id, message in newest.items():
            stamp = datetime.fromisoformat(message["updated_at_utc"].replace("Z", "+00:00"))
            assert stored[category_id].replace(tzinfo=UTC) >= stamp, "every good message applied (or a newer one)"


class ScriptedSyncApi:
    """Answers every request with the body a hypothesis example sets."""

    def __init__(self) -> None:
        self.body = b"[]"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedSyncApi, SyncApiClient]]:
    app = ScriptedSyncApi()
    with LoopbackServer(app) as server:  # type: ignore[arg-type]
        yield app, SyncApiClient(base_url=server.url, timeout_seconds=5)


product_records = st.fixed_dictionaries({k: st.just(v) | json_values for k, v in VALID_PRODUCT.items()
                                         if k != "city"})


@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
       | st.lists(product_records, max_size=3).map(lambda v: json.dumps(v).encode()))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_sync_api_answer_is_validated_or_refused_with_a_sync_api_error(
        scripted: tuple[ScriptedSyncApi, SyncApiClient], body: bytes) -> None:
    app, client = scripted
    app.body = body
    try:
        products = client.products_since(1, datetime(2026, 1, 1, tzinfo=UTC))
    except SyncApiError as exc:
        assert "Sync API" in str(exc)
        return
    for product in products:
        assert product.product_id >= 1 and product.price >= 0 and product.updated_at_utc.tzinfo is not None
