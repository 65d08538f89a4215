"""The stand-in Sync API from the command line.

``python -m rossmann_local.sync_api [--host H] [--port P]`` serves it (compose); with
``KAFKA_BOOTSTRAP_SERVERS`` set it also publishes its catalogue changes to the topics.

``python -m rossmann_local.sync_api change price --product 7 --city Berlin --price 6.49`` (or
``change product --product 7 --description ...``, ``change category --category 2 --name ...``)
asks the running stand-in at ``ROSSMANN_SYNC_API_URL`` to change its catalogue, for demos, with the
admin token of ``ROSSMANN_SYNC_API_ADMIN_TOKEN`` (or the one ``make dev`` keeps in the data dir).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from decimal import Decimal, InvalidOperation

import httpx
import uvicorn

from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.scenario_ledger import scenario_ledger_from_env
from rossmann_local.settings import (
    ADMIN_TOKEN_FILE,
    DEFAULT_SYNC_API_URL,
    KAFKA_BOOTSTRAP_SERVERS,
    SYNC_API_ADMIN_TOKEN,
    SYNC_API_URL,
    data_dir,
    load_world,
)
from rossmann_local.sync_api.app import create_app
from rossmann_local.sync_api.outbox import OutboxRelay
from rossmann_local.sync_api.server import open_seeded_store, uvicorn_config


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m rossmann_local.sync_api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    world = load_world()
    store = open_seeded_store(world)
    with ExitStack() as stack:
        if servers := os.environ.get(KAFKA_BOOTSTRAP_SERVERS):
            kafka = KafkaResource(bootstrap_servers=servers)
            kafka.ensure_topics()
            stack.enter_context(OutboxRelay(store, kafka, scenario_ledger_from_env().provenance(world)))
        # The admin endpoints open only to ROSSMANN_SYNC_API_ADMIN_TOKEN; unset, they stay closed.
        app = create_app(store, os.environ.get(SYNC_API_ADMIN_TOKEN) or None)
        uvicorn.Server(uvicorn_config(app, args.host, args.port)).run()
    return 0


def _amount(option: str) -> Callable[[str], float]:
    """A decimal amount from the command line, sent as the JSON number the API takes (a float's repr
    is the shortest text that reads back the same, so ``7.49`` goes as ``7.49``)."""
    def parse(text: str) -> float:
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"{option} {text!r} is not a number like 7.49") from None
        if not value.is_finite():
            raise argparse.ArgumentTypeError(f"{option} {text!r} is not a number like 7.49")
        return float(value)
    return parse


def change(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m rossmann_local.sync_api change")
    kinds = parser.add_subparsers(dest="kind", required=True)
    price = kinds.add_parser("price", help="a product's price and discount in one city")
    price.add_argument("--product", type=int, required=True)
    price.add_argument("--city", required=True)
    price.add_argument("--price", type=_amount("--price"), required=True)
    price.add_argument("--discount", type=_amount("--discount"), default=0.0)
    for kind, key in (("product", "--product"), ("category", "--category")):
        sub = kinds.add_parser(kind, help=f"a {kind}'s name, description or deletion")
        sub.add_argument(key, type=int, required=True)
        sub.add_argument("--name")
        sub.add_argument("--description")
        sub.add_argument("--deleted", choices=["true", "false"])
    for sub in kinds.choices.values():
        sub.add_argument("--at", help="when it takes effect, in simulated time, e.g. 2026-06-01T15:00:00+02:00 "
                                      "(default: now)")
    args = parser.parse_args(argv)
    base = os.environ.get(SYNC_API_URL) or DEFAULT_SYNC_API_URL
    if args.kind == "price":
        path = f"/admin/products/{args.product}/prices/{args.city}"
        body: dict[str, object] = {"price": args.price, "discount": args.discount}
    else:
        path = (f"/admin/products/{args.product}" if args.kind == "product"
                else f"/admin/categories/{args.category}")
        body = {"name": args.name, "description": args.description,
                "is_deleted": None if args.deleted is None else args.deleted == "true"}
    if args.at:
        body["effective_at_utc"] = args.at
    token = os.environ.get(SYNC_API_ADMIN_TOKEN)
    if not token and (data_dir() / ADMIN_TOKEN_FILE).exists():
        token = (data_dir() / ADMIN_TOKEN_FILE).read_text().strip()  # the local stack's stand-in
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(base + path, json=body, timeout=10, headers=headers)
    print(response.status_code, response.text)
    return 0 if response.status_code == 200 else 1


def main() -> None:
    argv = sys.argv[1:]
    sys.exit(change(argv[1:]) if argv[:1] == ["change"] else serve(argv))


if __name__ == "__main__":
    main()
