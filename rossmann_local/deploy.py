"""One-shot set-up of a deployment's services, from the same definitions the pipeline uses.

``python -m rossmann_local.deploy topics``            the Kafka topics of ``streaming.topics``
``python -m rossmann_local.deploy clickhouse-schema`` ``shop_reports`` from ``reports.schema``
``python -m rossmann_local.deploy shop-databases``    one Postgres database per shop of the world, schema created

Each is idempotent, so compose runs them on every ``docker compose up``. Because they import the
code's own topic list, DDL and world, the deployment has no second copy of any of them. A wrong or
unreachable setting stops the command with exit code 2 and a message naming the setting.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from rossmann_local import commandline
from rossmann_local.domain.topics import PARTITIONS
from rossmann_local.reports.schema import DATABASE, TABLES
from rossmann_local.resources.clickhouse import clickhouse_from_env
from rossmann_local.resources.kafka import kafka_from_env
from rossmann_local.resources.shop_databases import open_shop_engine, shop_database_url
from rossmann_local.settings import KAFKA_BOOTSTRAP_SERVERS, SHOP_DB_URL, ConfigError, data_dir, load_world, require


def create_topics() -> str:
    kafka = kafka_from_env()
    require(KAFKA_BOOTSTRAP_SERVERS)
    created = kafka.ensure_topics()
    partitions = kafka.topic_partitions()
    listed = ", ".join(f"{name} ({partitions.get(name, 0)})" for name in PARTITIONS)
    return f"Kafka topics ready, {len(created)} created now: {listed}"


def create_clickhouse_schema() -> str:
    reports = clickhouse_from_env()
    with reports.client() as client:  # opening a client creates shop_reports (reports.schema.ddl)
        tables = [row[0] for row in client.query(f"SHOW TABLES FROM {DATABASE}").result_rows]
    missing = sorted(set(TABLES) - set(tables))
    if missing:
        raise ConfigError(f"ClickHouse did not create {DATABASE}.{missing}")
    return f"ClickHouse {DATABASE} ready: {', '.join(sorted(tables))}"


def create_shop_databases() -> str:
    """Postgres only: SQLite files need no set-up. Connects to the server's ``postgres`` database
    to create what is missing, then creates each shop's schema."""
    template = require(SHOP_DB_URL)
    world = load_world()
    created = []
    for shop_id in world.shop_ids:
        url = make_url(shop_database_url(shop_id, template, data_dir()))
        if url.get_backend_name() != "postgresql":
            raise ConfigError(f"{SHOP_DB_URL}: shop databases are created on Postgres only, not {url.drivername}")
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database})
                if not exists:
                    quoted = conn.dialect.identifier_preparer.quote(url.database or "")
                    conn.execute(text(f"CREATE DATABASE {quoted}"))
                    created.append(url.database)
        except DBAPIError as exc:
            raise ConfigError(f"Postgres at {url.render_as_string(hide_password=True)} is not reachable "
                              f"(check {SHOP_DB_URL}): {str(exc.orig).strip().splitlines()[0]}") from None
        finally:
            admin.dispose()
        open_shop_engine(url.render_as_string(hide_password=False)).dispose()  # creates the schema
    return f"{len(world.shop_ids)} shop databases ready, {len(created)} created now: {', '.join(created) or 'none'}"


COMMANDS: dict[str, Callable[[], str]] = {
    "topics": create_topics,
    "clickhouse-schema": create_clickhouse_schema,
    "shop-databases": create_shop_databases,
}


@click.command(name="deploy", help=__doc__.splitlines()[0])
@click.argument("what", metavar="STEP", type=click.Choice([*COMMANDS, "all"]))
def deploy_command(what: str) -> int:
    return run_deploy(what)


def main(argv: list[str] | None = None) -> int:
    return commandline.run(deploy_command, argv, "python -m rossmann_local.deploy")


def run_deploy(what: str) -> int:
    """The one-shot set-up steps named (or all); the exit code."""
    try:
        for name, command in COMMANDS.items():
            if what in (name, "all"):
                print(command(), flush=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
