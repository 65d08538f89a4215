"""The no-service chain the benchmarks run on: the local stack of ``make day`` (its own Kafka broker,
the stand-in Sync API on loopback, SQLite shops and chDB) on a fresh temporary data dir."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from rossmann_local.domain.world import World
from rossmann_local.local.stack import LocalStack, local_stack
from rossmann_local.settings import CLICKHOUSE_DSN, DATA_DIR, KAFKA_BOOTSTRAP_SERVERS, SHOP_DB_URL, SYNC_API_URL


@contextmanager
def no_service_chain(world: World) -> Iterator[LocalStack]:
    """The stack on a temporary data dir, which is also ROSSMANN_DATA_DIR meanwhile; settings that
    would point elsewhere are cleared."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("DAGSTER_HOME", KAFKA_BOOTSTRAP_SERVERS, SYNC_API_URL, SHOP_DB_URL, CLICKHOUSE_DSN):
            os.environ.pop(name, None)
        os.environ[DATA_DIR] = tmp
        with local_stack(world) as stack:
            yield stack
