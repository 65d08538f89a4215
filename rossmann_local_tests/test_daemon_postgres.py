"""dagster-postgres under the daemon: ``make dev`` on an instance whose storage is Postgres (the
deployment's), a UI backfill of every shop's first day through the daemon's run queue, runs side by
side. The tests' Postgres: the server on 127.0.0.1:5432, else a throwaway one (conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from rossmann_local.domain.world import reference_world
from rossmann_local.local.instance import run_queue_policy
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import DAGSTER_PG_URL
from rossmann_local.sync_api.server import LoopbackServer, sync_api_server
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import TEST_ADMIN_TOKEN, TEST_PASSWORD, _pg_admin
from rossmann_local_tests.dagster_dev import backfill_done, backfill_runs, launch_backfill, make_dev, most_at_once
from rossmann_local_tests.helpers import receipts_of

pytestmark = [pytest.mark.postgres, pytest.mark.services]


@pytest.fixture
def instance_database() -> Iterator[str]:
    """A database of its own for the instance's storage: what ``ROSSMANN_DAGSTER_PG_URL`` names."""
    name = f"rossmann_test_instance_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin.url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_backfill_through_the_daemon_on_a_postgres_instance_runs_shops_side_by_side(
        tmp_path: Path, instance_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """make dev with ROSSMANN_DAGSTER_PG_URL: the instance under the data dir keeps its runs and
    events in Postgres (the run queue and daemon policy still the repository's dagster.yaml)."""
    store = CatalogueStore(f"sqlite:///{tmp_path / 'sync_api.sqlite'}")
    store.seed(reference_world(), password=TEST_PASSWORD)
    shops = 3  # enough for runs side by side; each shop is a run per shift
    keys = [f"2026-06-01-{start}|{shop}" for start in ("09:00", "15:00") for shop in range(1, shops + 1)]
    data = tmp_path / "data"
    with sync_api_server(store, admin_token=TEST_ADMIN_TOKEN) as server:
        server: LoopbackServer
        env = {DAGSTER_PG_URL: instance_database, "ROSSMANN_SHOP_COUNT": str(shops)}
        with make_dev(data, server.url, tmp_path / "dagster-dev.log", extra_env=env) as url:
            backfill = launch_backfill(url, keys)
            assert backfill_done(url, backfill) == "COMPLETED_SUCCESS"
    home = data / "dagster_home"
    assert yaml.safe_load((home / "dagster.yaml").read_text())["concurrency"]["runs"] == run_queue_policy()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        records = backfill_runs(instance, backfill)
        assert records and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        assert most_at_once(records) >= 2, "the run queue ran shops side by side"
        assert set(keys) <= instance.get_materialized_partitions(dg.AssetKey("transactions_report"))
    finally:
        instance.dispose()
    databases = ShopDatabases(sqlite_dir=str(data / "shops"))
    assert all(receipts_of(databases, shop) for shop in range(1, shops + 1))
    databases.dispose()

