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
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.sync_api.server import LoopbackServer, sync_api_server
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import TEST_ADMIN_TOKEN, TEST_PASSWORD, _pg_admin
from rossmann_local_tests.dagster_dev import ROOT, backfill_done, backfill_runs, launch_backfill, make_dev, most_at_once
from rossmann_local_tests.helpers import receipts_of

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_instance_home(tmp_path: Path) -> Iterator[Path]:
    """A DAGSTER_HOME whose dagster.yaml is the deployment's (storage in Postgres, the run queue and
    pools of the repository's dagster.yaml), on a database of its own."""
    name = f"rossmann_test_instance_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin.url).set(drivername="postgresql", database=name)
    deployment = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({
        "storage": {"postgres": {"postgres_url": url.render_as_string(hide_password=False)}},
        "concurrency": deployment["concurrency"], "run_launcher": deployment["run_launcher"],
        "run_coordinator": deployment["run_coordinator"], "sensors": deployment["sensors"],
        "telemetry": {"enabled": False}}))
    try:
        yield home
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_backfill_through_the_daemon_on_a_postgres_instance_runs_shops_side_by_side(
        tmp_path: Path, postgres_instance_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CatalogueStore(f"sqlite:///{tmp_path / 'sync_api.sqlite'}")
    store.seed(reference_world(), password=TEST_PASSWORD)
    keys = [f"2026-06-01-{start}|{shop}" for start in ("09:00", "15:00") for shop in range(1, 6)]
    data = tmp_path / "data"
    with sync_api_server(store, admin_token=TEST_ADMIN_TOKEN) as server:
        server: LoopbackServer
        with make_dev(data, server.url, tmp_path / "dagster-dev.log", dagster_home=postgres_instance_home) as url:
            backfill = launch_backfill(url, keys)
            assert backfill_done(url, backfill) == "COMPLETED_SUCCESS"
    monkeypatch.setenv("DAGSTER_HOME", str(postgres_instance_home))
    instance = dg.DagsterInstance.from_config(str(postgres_instance_home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        records = backfill_runs(instance, backfill)
        assert records and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        assert most_at_once(records) >= 2, "the run queue ran shops side by side"
        assert set(keys) <= instance.get_materialized_partitions(dg.AssetKey("transactions_report"))
    finally:
        instance.dispose()
    shops = ShopDatabases(sqlite_dir=str(data / "shops"))
    assert all(receipts_of(shops, shop) for shop in range(1, 6))
    shops.dispose()
