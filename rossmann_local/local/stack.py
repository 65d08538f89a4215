"""The local stack: what the no-service defaults lack, started for as long as a command runs.

Unless the environment names its own: a Kafka broker (``KAFKA_BOOTSTRAP_SERVERS``) with the
project's topics, and the stand-in Sync API (``ROSSMANN_SYNC_API_URL``) on loopback with its outbox
relay publishing the chain's catalogue changes to Kafka. Then the resources on them, the shop
databases and ClickHouse as the environment configures them. The main command, ``make dev``, the
benchmarks and the tests all start the chain through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rossmann_local.domain.provenance import Provenance
from rossmann_local.domain.world import World
from rossmann_local.local.broker import LocalBroker
from rossmann_local.local.processes import data_dir_lock
from rossmann_local.resources.clickhouse import ClickHouseReports, clickhouse_from_env
from rossmann_local.resources.kafka import KafkaResource, kafka_from_env
from rossmann_local.resources.scenario_ledger import ScenarioLedger, scenario_ledger_from_env
from rossmann_local.resources.shop_databases import ShopDatabases, shop_databases_from_env
from rossmann_local.resources.sync_api_client import SyncApiClient, sync_api_client_from_env
from rossmann_local.settings import DATA_DIR, KAFKA_BOOTSTRAP_SERVERS, SCENARIO, SYNC_API_URL, data_dir
from rossmann_local.sync_api.outbox import OutboxRelay
from rossmann_local.sync_api.server import local_admin_token, open_seeded_store, sync_api_server
from rossmann_local.sync_api.store import CatalogueStore


@dataclass(frozen=True)
class LocalStack:
    world: World
    kafka: KafkaResource
    sync_api: SyncApiClient
    shop_databases: ShopDatabases
    clickhouse: ClickHouseReports
    store: CatalogueStore | None  # the stand-in's catalogue; None when the Sync API is someone else's
    relay: OutboxRelay | None
    broker: LocalBroker | None  # None when the environment names the brokers
    provenance: Provenance  # the headers' common part of what this command produces
    admin_token: str | None = None  # the stand-in's admin endpoints' bearer token

    @property
    def resources(self) -> dict[str, Any]:
        """The resources every asset, sensor and job of the code location needs."""
        return {"shop_databases": self.shop_databases, "sync_api": self.sync_api, "clickhouse": self.clickhouse,
                "kafka": self.kafka}

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers if self.broker is not None else os.environ[KAFKA_BOOTSTRAP_SERVERS]

    def code_location_env(self, dagster_home: Path, **extra: str) -> dict[str, str]:
        """The environment of a ``dagster dev`` on this stack: its code location's runs, sensors and
        schedules reach this broker and this Sync API, the data dir (absolute: dagster dev runs in
        ``dagster_home``) and the instance."""
        env = {**os.environ, DATA_DIR: str(data_dir().resolve()), "DAGSTER_HOME": str(dagster_home),
               KAFKA_BOOTSTRAP_SERVERS: self.bootstrap_servers, **extra}
        if self.store is not None:
            env[SYNC_API_URL] = self.sync_api.base_url
        return env


def scenario_env(scenario: str | None) -> dict[str, str]:
    """The code location's ``ROSSMANN_SCENARIO`` for a command's ``--scenario`` (a file's path made
    absolute: dagster dev runs elsewhere); nothing when the command names none."""
    if not scenario:
        return {}
    return {SCENARIO: str(Path(scenario).resolve()) if Path(scenario).is_file() else scenario}


@contextmanager
def local_stack(world: World, sync_api_port: int = 0, data: Path | None = None,
                command: str = "a rossmann_local command", scenario: ScenarioLedger | None = None
                ) -> Iterator[LocalStack]:
    """Start the missing parts (the stand-in on ``sync_api_port``, 0 for any free one; the broker's
    data under ``data``, default the data dir) and stop them, in reverse order, on the way out. The
    data dir is held for ``command`` meanwhile: a second command on it stops, naming this one. What
    the stack produces carries the command's ``scenario`` (default ``ROSSMANN_SCENARIO``'s) in its headers."""
    data = data or data_dir()
    provenance = (scenario or scenario_ledger_from_env()).provenance(world)
    with ExitStack() as stack:
        stack.enter_context(data_dir_lock(data, command))
        broker = None
        if os.environ.get(KAFKA_BOOTSTRAP_SERVERS):
            kafka = kafka_from_env()
        else:
            broker = stack.enter_context(LocalBroker(data / "kafka"))
            kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers,
                                  source=f"the local broker this command started, {KAFKA_BOOTSTRAP_SERVERS} unset")
        kafka.ensure_topics()
        sync_api = sync_api_client_from_env()
        store = relay = admin_token = None
        if not os.environ.get(SYNC_API_URL):
            store = open_seeded_store(world)
            admin_token = local_admin_token(data)
            server = stack.enter_context(sync_api_server(store, port=sync_api_port, admin_token=admin_token))
            sync_api = SyncApiClient(base_url=server.url, timeout_seconds=sync_api.timeout_seconds)
            relay = stack.enter_context(OutboxRelay(store, kafka, provenance))
        yield LocalStack(world, kafka, sync_api, shop_databases_from_env(), clickhouse_from_env(), store, relay,
                         broker, provenance, admin_token)
