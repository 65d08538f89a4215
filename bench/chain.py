"""The no-service chain the benchmarks run on: a fresh data dir with its own Kafka broker (topics
created), the stand-in Sync API on loopback, SQLite shops and chDB, as ``make day`` has them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rossmann_local.domain.world import World
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.streaming.broker import LocalBroker
from rossmann_local.sync_api.server import open_seeded_store, sync_api_server


@contextmanager
def no_service_chain(world: World) -> Iterator[tuple[LocalBroker, dict[str, Any]]]:
    """(the broker, the resources) on a temporary data dir, which is also ROSSMANN_DATA_DIR meanwhile."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ROSSMANN_DATA_DIR"] = tmp
        os.environ.pop("DAGSTER_HOME", None)
        with LocalBroker(Path(tmp) / "kafka") as broker, sync_api_server(open_seeded_store(world)) as server:
            kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers)
            kafka.ensure_topics()
            yield broker, {"shop_databases": ShopDatabases(sqlite_dir=f"{tmp}/shops"),
                           "sync_api": SyncApiClient(base_url=server.url),
                           "clickhouse": ClickHouseReports(dsn=f"chdb://{tmp}/clickhouse"), "kafka": kafka}
