"""The stand-in Sync API from the command line.

``python -m rossmann_local.sync_api [--host H] [--port P]`` serves it (compose); with
``KAFKA_BOOTSTRAP_SERVERS`` set it also publishes its catalogue changes to the topics.

``python -m rossmann_local.sync_api change price --product 7 --city Berlin --price 6.49`` (or
``change product --product 7 --description ...``, ``change category --category 2 --name ...``)
asks the running stand-in at ``ROSSMANN_SYNC_API_URL`` to change its catalogue, for demos, with the
admin token of ``ROSSMANN_SYNC_API_ADMIN_TOKEN`` (or the one ``make dev`` keeps in the data dir).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from decimal import Decimal, InvalidOperation
from typing import Any

import click
import httpx
import uvicorn

from rossmann_local import commandline
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


def serve(host: str, port: int) -> int:
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
        uvicorn.Server(uvicorn_config(app, host, port)).run()
    return 0


class Amount(click.ParamType):
    """A decimal amount from the command line, sent as the JSON number the API takes (a float's repr
    is the shortest text that reads back the same, so ``7.49`` goes as ``7.49``)."""

    name = "AMOUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            amount = Decimal(value)
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite():
            self.fail(f"{value!r} is not a number like 7.49", param, ctx)
        return float(amount)


def post_change(path: str, body: dict[str, object], at: str | None) -> int:
    """The change sent to the running stand-in's admin endpoint, with the admin token; its answer printed."""
    base = os.environ.get(SYNC_API_URL) or DEFAULT_SYNC_API_URL
    if at:
        body["effective_at_utc"] = at
    token = os.environ.get(SYNC_API_ADMIN_TOKEN)
    if not token and (data_dir() / ADMIN_TOKEN_FILE).exists():
        token = (data_dir() / ADMIN_TOKEN_FILE).read_text().strip()  # the local stack's stand-in
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(base + path, json=body, timeout=10, headers=headers)
    print(response.status_code, response.text)
    return 0 if response.status_code == 200 else 1


AT_HELP = "when it takes effect, in simulated time, e.g. 2026-06-01T15:00:00+02:00 (default: now)"


@click.group(name="sync-api", invoke_without_command=True,
             help="Serve the stand-in Sync API, or (change ...) change the running one's catalogue.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.pass_context
def sync_api_command(ctx: click.Context, host: str, port: int) -> int | None:
    return serve(host, port) if ctx.invoked_subcommand is None else None


@sync_api_command.group(name="change", help="Change the running stand-in's catalogue (its admin endpoints).")
def change() -> None:
    pass


@change.command(name="price", help="a product's price and discount in one city")
@click.option("--product", type=int, required=True)
@click.option("--city", required=True)
@click.option("--price", type=Amount(), required=True)
@click.option("--discount", type=Amount(), default=0.0, show_default=True)
@click.option("--at", help=AT_HELP)
def change_price(product: int, city: str, price: float, discount: float, at: str | None) -> int:
    return post_change(f"/admin/products/{product}/prices/{city}", {"price": price, "discount": discount}, at)


def _name_and_deletion(kind: str) -> Callable[[Callable[..., int]], click.Command]:
    def define(function: Callable[..., int]) -> click.Command:
        for decorate in reversed((
                change.command(name=kind, help=f"a {kind}'s name, description or deletion"),
                click.option(f"--{kind}", "key", type=int, required=True),
                click.option("--name"), click.option("--description"),
                click.option("--deleted", type=click.Choice(["true", "false"])),
                click.option("--at", help=AT_HELP))):
            function = decorate(function)
        return function  # type: ignore[return-value]
    return define


@_name_and_deletion("product")
def change_product(key: int, name: str | None, description: str | None, deleted: str | None, at: str | None) -> int:
    return post_change(f"/admin/products/{key}", _named(name, description, deleted), at)


@_name_and_deletion("category")
def change_category(key: int, name: str | None, description: str | None, deleted: str | None, at: str | None) -> int:
    return post_change(f"/admin/categories/{key}", _named(name, description, deleted), at)


def _named(name: str | None, description: str | None, deleted: str | None) -> dict[str, object]:
    return {"name": name, "description": description, "is_deleted": None if deleted is None else deleted == "true"}


def main(argv: list[str] | None = None) -> int:
    return commandline.run(sync_api_command, argv, "python -m rossmann_local.sync_api")


if __name__ == "__main__":
    sys.exit(main())
