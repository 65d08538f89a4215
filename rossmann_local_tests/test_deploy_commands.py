"""The deployment's one-shot set-up commands and its Dagster instance, run against the real parts
(the session's Kafka broker, chDB, the local Postgres), and what bad settings make them say."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import create_engine, inspect, text

from rossmann_local import deploy
from rossmann_local.domain.topics import PARTITIONS
from rossmann_local.local.broker import LocalBroker
from rossmann_local.local.instance import instance_home, managed_instance
from rossmann_local.reports.schema import DATABASE, TABLES
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.shop_db.models import ShopBase
from rossmann_local_tests.conftest import _pg_admin, pg_admin_url

ROOT = Path(__file__).resolve().parents[1]


def run(what: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = deploy.main([what])
    out, err = capsys.readouterr()
    return code, out, err


def test_topics_are_created_with_the_reference_partitions_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with LocalBroker(tmp_path / "kafka") as broker:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
        assert run("topics", capsys)[:2] == (0, f"Kafka topics ready, {len(PARTITIONS)} created now: "
                                                + ", ".join(f"{t} ({n})" for t, n in PARTITIONS.items()) + "\n")
        code, out, _ = run("topics", capsys)
        assert code == 0 and "0 created now" in out
        partitions = KafkaResource(bootstrap_servers=broker.bootstrap_servers).topic_partitions()
        assert {t: partitions[t] for t in PARTITIONS} == PARTITIONS


def test_clickhouse_schema_is_the_codes_ddl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROSSMANN_CLICKHOUSE_DSN", f"chdb://{tmp_path / 'ch'}")
    for _ in range(2):
        code, out, _ = run("clickhouse-schema", capsys)
        assert code == 0 and out == f"ClickHouse {DATABASE} ready: {', '.join(sorted(TABLES))}\n"


@pytest.fixture
def shop_db_template() -> Iterator[str]:
    prefix = f"rossmann_test_{uuid.uuid4().hex[:8]}"
    yield f"{pg_admin_url().rsplit('/', 1)[0]}/{prefix}_shop_{{shop_id}}"
    admin = _pg_admin()
    with admin.connect() as conn:
        for shop_id in range(1, 6):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{prefix}_shop_{shop_id}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.postgres
def test_shop_databases_are_created_for_every_shop_with_their_schema(
        shop_db_template: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROSSMANN_SHOP_DB_URL", shop_db_template)
    code, out, _ = run("shop-databases", capsys)
    assert code == 0 and out.startswith("5 shop databases ready, 5 created now")
    code, out, _ = run("shop-databases", capsys)
    assert code == 0 and out.startswith("5 shop databases ready, 0 created now")
    engine = create_engine(shop_db_template.format(shop_id=5))
    assert set(ShopBase.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


@pytest.mark.parametrize(("what", "env", "named"), [
    ("topics", {}, "KAFKA_BOOTSTRAP_SERVERS is not set"),
    ("topics", {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "check KAFKA_BOOTSTRAP_SERVERS"),
    ("shop-databases", {}, "ROSSMANN_SHOP_DB_URL is not set"),
    ("shop-databases", {"ROSSMANN_SHOP_DB_URL": "postgresql+psycopg://postgres:secret@127.0.0.1:1/shop_{shop_id}"},
     "check ROSSMANN_SHOP_DB_URL"),
    ("shop-databases", {"ROSSMANN_SHOP_DB_URL": "sqlite:///shop_{shop_id}.sqlite"}, "Postgres only"),
    ("clickhouse-schema", {"ROSSMANN_CLICKHOUSE_DSN": "http://default:secret@127.0.0.1:1"},
     "check ROSSMANN_CLICKHOUSE_DSN"),
    ("shop-databases", {"ROSSMANN_SHOP_DB_URL": "postgresql+psycopg://127.0.0.1/shop"},
     "ROSSMANN_SHOP_DB_URL must contain {shop_id}"),
])
def test_a_bad_setting_stops_the_one_shot_with_the_setting_named(
        what: str, env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(what, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and named in err, err
    assert "Traceback" not in err and "secret" not in err


def test_a_missing_world_setting_is_named_before_anything_connects(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROSSMANN_SHOP_DB_URL", "postgresql+psycopg://postgres@127.0.0.1:1/shop_{shop_id}")
    monkeypatch.setenv("ROSSMANN_SHOP_COUNT", "many")
    code, _, err = run("shop-databases", capsys)
    assert code == 2 and "ROSSMANN_SHOP_COUNT='many' is not a whole number" in err


@pytest.fixture
def instance_dir(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.mark.postgres
def test_the_compose_instance_runs_on_postgres_with_its_run_queue(instance_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """dagster.yaml as compose uses it, with dagster-postgres against the local server."""
    name = f"rossmann_test_dagster_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url
    for key, value in {"DAGSTER_PG_HOST": url.host, "DAGSTER_PG_PORT": str(url.port or 5432),
                       "DAGSTER_PG_USER": url.username, "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
                       "DAGSTER_PG_DB": name}.items():
        monkeypatch.setenv(key, value)
    try:
        instance = dg.DagsterInstance.from_config(str(instance_dir))
        try:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            queue = instance.get_concurrency_config().run_queue_config
            assert queue.max_concurrent_runs == 4
            assert {limit["key"] for limit in queue.tag_concurrency_limits} == {
                "dagster/partition/shop", "rossmann_local/run"}
            assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            assert instance.run_coordinator.dequeue_interval_seconds == 1
            assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        finally:
            instance.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_missing_instance_setting_is_named(instance_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(key, "x")
    monkeypatch.delenv("DAGSTER_PG_HOST")
    with pytest.raises(Exception, match="DAGSTER_PG_HOST"):
        dg.DagsterInstance.from_config(str(instance_dir))


def test_the_no_service_instance_takes_its_run_queue_from_dagster_yaml() -> None:
    """The run queue's and the pools' policy is written once, in dagster.yaml; make day and make dev's
    instance keeps its own storage (chDB's one process at a time is the ClickHouse resource's lock)."""
    written = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]
    config = managed_instance().get_concurrency_config()
    queue = config.run_queue_config
    assert queue.max_concurrent_runs == written["max_concurrent_runs"]
    assert [(limit["key"], limit.get("value"), limit["limit"]) for limit in queue.tag_concurrency_limits] == [
        (limit["key"], limit.get("value"), limit["limit"]) for limit in written["tag_concurrency_limits"]]
    pools = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["pools"]
    assert config.pool_config.default_pool_limit == pools["default_limit"]


def test_the_instance_follows_the_data_dir_in_one_process_unless_the_environment_names_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second command in the same process (a test, a notebook) on another data dir gets that data
    dir's instance, not the first one's (whose sensor cursors belong to another broker); a
    DAGSTER_HOME the environment names is kept."""
    monkeypatch.setenv("ROSSMANN_DATA_DIR", str(tmp_path / "first"))
    assert instance_home() == (tmp_path / "first" / "dagster_home").resolve()
    monkeypatch.setenv("ROSSMANN_DATA_DIR", str(tmp_path / "second"))
    assert instance_home() == (tmp_path / "second" / "dagster_home").resolve()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "named"))
    assert instance_home() == tmp_path / "named"
