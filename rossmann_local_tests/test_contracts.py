"""The contracts in contracts/: generated from the code, committed, and kept by what the code sends."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from rossmann_local.contracts import CONTRACTS, drift, generated
from rossmann_local.domain.messages import TOPIC_MESSAGES, DeadLetter
from rossmann_local.domain.stock_levels import stock_message_parts
from rossmann_local.domain.topics import DEAD_LETTER_TOPIC, STOCK_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import contract_errors, topic_validators


def test_the_committed_contracts_are_what_the_code_generates() -> None:
    differences = drift()
    assert not differences, "contracts/ differs from the code; run `make contracts` and review:\n" + \
        "".join(differences)[:4000]


def test_a_changed_field_shows_as_drift(tmp_path: Path) -> None:
    """The check compares the documents field by field: a committed schema with one field's type
    changed, or one file missing, is reported with the field named."""
    committed = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, committed)
    stock = committed / "topics" / f"{STOCK_TOPIC}.schema.json"
    schema = json.loads(stock.read_text())
    schema["properties"]["sequence"]["type"] = "string"
    stock.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    (committed / "sync-api.openapi.json").unlink()
    [changed, missing] = sorted(drift(committed), key=lambda d: d.startswith("sync-api"))
    assert f"committed/topics/{STOCK_TOPIC}.schema.json" in changed
    assert '-      "type": "string"' in changed and '+      "type": "integer"' in changed
    assert missing == "sync-api.openapi.json: missing\n"


def test_the_openapi_document_gives_every_endpoint_its_answers_and_error_bodies() -> None:
    document = json.loads(generated()["sync-api.openapi.json"])
    errors = {
        "/shops/authorize": {"401", "404", "422", "429"},
        "/employees/authorize": {"401", "422", "429"},
        "/terminals/authorize": {"401", "403", "404", "422", "429"},
        "/products/sync": {"404", "422"},
        "/admin/products/{product_id}/prices/{city}": {"401", "404", "413", "422"},
    }
    for path, codes in errors.items():
        [operation] = document["paths"][path].values()
        assert "200" in operation["responses"] and codes <= set(operation["responses"]), path
        for code in codes:
            schema = operation["responses"][code]["content"]["application/json"]["schema"]["$ref"]
            assert schema.rsplit("/", 1)[1] in ("Refusal", "InvalidRequest"), (path, code)
    [admin] = document["paths"]["/admin/categories/{category_id}"].values()
    assert admin["security"] == [{"AdminToken": []}]
    assert document["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"


def test_each_topic_has_a_schema_and_real_messages_of_every_kind_validate(store: CatalogueStore, world: World) -> None:
    validators = topic_validators()
    assert set(validators) == set(TOPIC_MESSAGES)
    # the catalogue messages the stand-in writes to its outbox, one per change
    store.update_category(1, name="Hygiene", at=datetime(2026, 6, 1, 10, tzinfo=UTC))
    store.update_product(2, description="New look", at=datetime(2026, 6, 1, 10, tzinfo=UTC))
    store.set_price(3, "Berlin", Decimal("4.25"), Decimal("0.1"), at=datetime(2026, 6, 1, 10, tzinfo=UTC))
    outbox = store.unpublished()
    assert {row.topic for row in outbox} >= {"local_db_upsert_category", "local_db_upsert_product"}
    for row in outbox:
        assert contract_errors(validators, row.topic, row.payload.encode()) == [], row.payload
    # a shop's stock levels, in one part and in several
    checkpoint = datetime(2026, 6, 1, 7, 50, tzinfo=UTC)
    for part in stock_message_parts(1, {3: 412, 7: 0}, checkpoint) + \
            stock_message_parts(2, {p: p % 50 for p in range(1, 5001)}, checkpoint, limit=20_000):
        assert contract_errors(validators, STOCK_TOPIC, part.encode()) == []
    # a dead letter, with and without its payload
    for payload in (b'{"product_id": "x"}', None):
        letter = DeadLetter("local_db_upsert_product", 0, 41, "product_id: Input should be a valid integer", payload)
        assert contract_errors(validators, DEAD_LETTER_TOPIC, letter.to_json()) == []
    # and a message that breaks the contract is caught, field named
    bad = b'{"shop_id":"1","checkpoint_utc":"2026-06-01T07:50:00Z","sequence":1,"part":1,"parts":1,' \
          b'"updated_products":{"3":-2}}'
    assert contract_errors(validators, STOCK_TOPIC, bad) == ["updated_products/3: -2 is less than the minimum of 0"]
