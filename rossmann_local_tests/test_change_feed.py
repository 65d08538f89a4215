"""The change feed: a shop database on Postgres publishes its changes for logical replication, and a
real logical decoding plugin (Postgres's own ``pgoutput``, what Debezium reads) finds every receipt
once, a shift sold again included."""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select, text

from rossmann_local.domain.world import World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop_db.models import CHANGE_FEED_PUBLICATION, Transaction
from rossmann_local_tests.helpers import materialize_shift, shift_of
from rossmann_local_tests.throwaway_postgres import ThrowawayPostgres

pytestmark = pytest.mark.postgres
SLOT = "rossmann_test_feed"


@pytest.fixture(scope="module")
def logical_postgres() -> Iterator[str]:
    """A Postgres of its own with logical WAL (the machine's server may run with ``replica``)."""
    server = ThrowawayPostgres("wal_level=logical")
    try:
        yield server.start()
    finally:
        server.stop()


def _text(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\0", at)
    return data[at:end].decode(), end + 1


def decoded_inserts(messages: list[bytes]) -> list[tuple[str, dict[str, str | None]]]:
    """(table, row) of every insert in pgoutput's protocol 1: its Relation messages name the tables and
    columns, its Insert messages carry the new row as text."""
    relations: dict[int, tuple[str, list[str]]] = {}
    inserts = []
    for data in messages:
        kind = data[:1]
        if kind == b"R":
            (relid,) = struct.unpack_from(">I", data, 1)
            _namespace, at = _text(data, 5)
            name, at = _text(data, at)
            (columns,) = struct.unpack_from(">h", data, at + 1)
            at += 3
            names = []
            for _ in range(columns):
                column, at = _text(data, at + 1)
                names.append(column)
                at += 8  # type oid, type modifier
            relations[relid] = (name, names)
        elif kind == b"I":
            (relid,) = struct.unpack_from(">I", data, 1)
            (columns,) = struct.unpack_from(">h", data, 6)
            at, values = 8, []
            for _ in range(columns):
                tag = data[at:at + 1]
                at += 1
                if tag == b"t":
                    (length,) = struct.unpack_from(">i", data, at)
                    values.append(data[at + 4:at + 4 + length].decode())
                    at += 4 + length
                else:
                    values.append(None)
            name, names = relations[relid]
            inserts.append((name, dict(zip(names, values, strict=True))))
    return inserts


def test_a_postgres_shop_publishes_every_receipt_once_to_a_logical_decoding_plugin(
        world: World, sync_api: SyncApiClient, logical_postgres: str) -> None:
    base = logical_postgres.rsplit("/", 1)[0]
    admin = create_engine(logical_postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE feed_shop_1"))
    shops = ShopDatabases(url_template=f"{base}/feed_shop_{{shop_id}}")
    try:
        with shops.transaction(1) as conn:  # the shop's schema (its migrations) before the slot
            assert conn.scalar(text("SELECT count(*) FROM pg_publication WHERE pubname = :name"),
                               {"name": CHANGE_FEED_PUBLICATION}) == 1
        with shops.engine(1).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SELECT pg_create_logical_replication_slot(:slot, 'pgoutput')"), {"slot": SLOT})
        resources = {"shop_databases": shops, "sync_api": sync_api}
        for index in (0, 1):
            assert materialize_shift(world, shift_of(world, index=index), 1, resources).success
        assert materialize_shift(world, shift_of(world, index=0), 1, resources).success, "the morning again"
        with shops.transaction(1) as conn:
            receipts = set(conn.scalars(select(Transaction.transaction_id)))
            rows = conn.execute(text(
                "SELECT data FROM pg_logical_slot_get_binary_changes(:slot, NULL, NULL, 'proto_version', '1', "
                "'publication_names', :publication)"), {"slot": SLOT, "publication": CHANGE_FEED_PUBLICATION})
            inserts = decoded_inserts([bytes(row.data) for row in rows])
            conn.execute(text("SELECT pg_drop_replication_slot(:slot)"), {"slot": SLOT})
        published = Counter(int(row["transaction_id"]) for table, row in inserts if table == "transactions")
        assert receipts and set(published) == receipts, "every receipt is in the feed"
        assert set(published.values()) == {1}, "each once: selling a shift again rewrites no equal receipt"
        tables = {table for table, _ in inserts}
        assert {"transaction_items", "deliveries", "delivery_items", "products", "categories"} <= tables
        assert "shifts" not in tables and "product_versions" not in tables, "bookkeeping is not published"
    finally:
        shops.dispose()
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS feed_shop_1 WITH (FORCE)"))
        admin.dispose()
