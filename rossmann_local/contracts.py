"""The project's contracts for its clients, generated from the code: ``make contracts``.

``contracts/sync-api.openapi.json`` is the Sync API's OpenAPI document (FastAPI's, with the response
models and the error bodies), and ``contracts/topics/<topic>.schema.json`` the JSON Schema of each
Kafka topic's messages (from the models the code parses and builds them with). The test suite fails
when the committed files differ from what the code generates (``--check`` says which and how).
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any

import click

from rossmann_local import commandline
from rossmann_local.domain.messages import TOPIC_MESSAGES
from rossmann_local.domain.topics import PARTITIONS
from rossmann_local.sync_api.app import create_app
from rossmann_local.sync_api.store import CatalogueStore

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def sync_api_document() -> dict[str, Any]:
    """The OpenAPI document of the Sync API (the in-memory store only stands in: nothing is served)."""
    store = CatalogueStore("sqlite://")
    try:
        return create_app(store).openapi()
    finally:
        store.engine.dispose()


def topic_schema(topic: str) -> dict[str, Any]:
    schema = TOPIC_MESSAGES[topic].model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"topics/{topic}.schema.json", "title": topic,
            "x-kafka": {"topic": topic, "partitions": PARTITIONS[topic]}, **{k: v for k, v in schema.items()
                                                                            if k != "title"}}


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generated() -> dict[str, str]:
    """Every contract file, by its path under ``contracts/``, as the code makes it now."""
    files = {"sync-api.openapi.json": _text(sync_api_document())}
    files |= {f"topics/{topic}.schema.json": _text(topic_schema(topic)) for topic in TOPIC_MESSAGES}
    return files


def drift(where: Path = CONTRACTS) -> list[str]:
    """How the files under ``where`` differ from the generated ones: one unified diff (or note) each."""
    found = []
    wanted = generated()
    for name, text in wanted.items():
        path = where / name
        committed = path.read_text() if path.exists() else ""
        if not committed:
            found.append(f"{name}: missing\n")
        elif committed != text:
            found.append("".join(difflib.unified_diff(committed.splitlines(keepends=True),
                                                      text.splitlines(keepends=True),
                                                      f"committed/{name}", f"generated/{name}", n=2)))
    stale = sorted(str(p.relative_to(where)) for p in where.rglob("*.json") if str(p.relative_to(where)) not in wanted)
    found += [f"{name}: no longer generated\n" for name in stale]
    return found


def write(where: Path = CONTRACTS) -> list[str]:
    wanted = generated()
    for name, text in wanted.items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in where.rglob("*.json"):
        if str(path.relative_to(where)) not in wanted:
            path.unlink()
    return sorted(wanted)


@click.command(name="contracts", help=__doc__.splitlines()[0])
@click.option("--check", is_flag=True, help="only compare; exit 1 if the files differ")
def contracts_command(check: bool) -> int:
    if check:
        differences = drift()
        sys.stdout.write("".join(differences) or "contracts/ matches the code\n")
        return 1 if differences else 0
    for name in write():
        print(f"wrote contracts/{name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return commandline.run(contracts_command, argv, "python -m rossmann_local.contracts")


if __name__ == "__main__":
    sys.exit(main())
