"""Bad configuration fails the code location or the run with a message that names the setting to
fix, never with a driver's stack trace: what a user sees in the Dagster UI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from rossmann_local.defs import build_definitions, default_resources
from rossmann_local.local import dev
from rossmann_local.local.processes import free_port
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.settings import DAGSTER_PG_URL
from rossmann_local_tests.helpers import ASSET_NAMES, materialize_shift, shift_of, step_error

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE_PG = "postgresql+psycopg://postgres:secret-pw@127.0.0.1:1/shop_{shop_id}"


def assert_names_the_setting(error: dg.SerializableErrorInfo, setting: str) -> None:
    assert setting in error.message, error.message
    assert error.cause is None and error.context is None, "the driver's error is summarized, not chained"
    assert "secret-pw" not in error.to_string()


def test_the_code_location_names_a_bad_setting_when_it_loads(tmp_path: Path) -> None:
    env = {**os.environ, "ROSSMANN_SHOP_COUNT": "lots", "ROSSMANN_DATA_DIR": str(tmp_path), "TZ": "UTC"}
    env.pop("DAGSTER_HOME", None)
    loaded = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w",
                             str(ROOT / "workspace.yaml")], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert loaded.returncode != 0
    assert "ROSSMANN_SHOP_COUNT='lots' is not a whole number" in loaded.stdout + loaded.stderr


def test_the_code_location_loads_with_the_defaults(tmp_path: Path) -> None:
    env = {**os.environ, "ROSSMANN_DATA_DIR": str(tmp_path), "TZ": "UTC"}
    env.pop("DAGSTER_HOME", None)
    loaded = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w",
                             str(ROOT / "workspace.yaml")], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr


def test_a_run_on_an_unreachable_postgres_names_the_setting(world, sync_api: SyncApiClient) -> None:
    shops = ShopDatabases(url_template=UNREACHABLE_PG)
    result = materialize_shift(world, shift_of(world), 1, {"shop_databases": shops, "sync_api": sync_api},
                               assets=ASSET_NAMES, raise_on_error=False)
    assert not result.success
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY], \
        "a wrong setting fails at once, it is not retried"
    assert_names_the_setting(step_error(result), "ROSSMANN_SHOP_DB_URL")


def test_a_report_run_on_an_unreachable_clickhouse_names_the_setting(
        world, sqlite_shops: ShopDatabases, sync_api: SyncApiClient) -> None:
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api}
    assert materialize_shift(world, shift_of(world), 1, resources).success
    resources["clickhouse"] = ClickHouseReports(dsn="http://default:secret-pw@127.0.0.1:1")
    result = materialize_shift(world, shift_of(world), 1, resources, assets=("transactions_report",),
                               raise_on_error=False)
    assert not result.success
    assert_names_the_setting(step_error(result), "ROSSMANN_CLICKHOUSE_DSN")


def test_a_stock_run_without_kafka_names_the_setting(world, sqlite_shops: ShopDatabases,
                                                     sync_api: SyncApiClient) -> None:
    resources = {"shop_databases": sqlite_shops, "sync_api": sync_api}
    assert materialize_shift(world, shift_of(world), 1, resources).success
    resources["kafka"] = KafkaResource(bootstrap_servers="127.0.0.1:1", delivery_timeout_seconds=2)
    result = materialize_shift(world, shift_of(world), 1, resources, assets=("shift_stock_levels",),
                               raise_on_error=False)
    assert not result.success
    error = step_error(result)
    assert "check KAFKA_BOOTSTRAP_SERVERS" in error.message and "they stay queued" in error.message


def test_a_sensor_tick_without_kafka_names_the_setting(world) -> None:
    unreachable = KafkaResource(bootstrap_servers="127.0.0.1:1", request_timeout_seconds=2)
    defs = build_definitions(world, resources={**default_resources(), "kafka": unreachable})
    sensor = defs.get_sensor_def("catalogue_changes_sensor")
    with dg.instance_for_test() as instance, pytest.raises(Exception, match="check KAFKA_BOOTSTRAP_SERVERS") as info:
        sensor(dg.build_sensor_context(instance=instance, resources={"kafka": unreachable}))
    assert info.value.__cause__ is None and info.value.__suppress_context__


BAD_SETTINGS = {
    "a ClickHouse password with # / ?": ({"ROSSMANN_CLICKHOUSE_DSN": "http://default:p#a/s?sw0rd@127.0.0.1:1"},
                                         "ROSSMANN_CLICKHOUSE_DSN"),
    "a timeout that is not a number": ({"ROSSMANN_SYNC_API_TIMEOUT_SECONDS": "nan"},
                                       "ROSSMANN_SYNC_API_TIMEOUT_SECONDS"),
    "an infinite timeout": ({"ROSSMANN_SYNC_API_TIMEOUT_SECONDS": "inf"}, "ROSSMANN_SYNC_API_TIMEOUT_SECONDS"),
    "a data dir under a file": ({"ROSSMANN_DATA_DIR": "/etc/hostname/data"}, "ROSSMANN_DATA_DIR"),
    "an unreachable store": ({"ROSSMANN_SYNC_API_STORE_URL": "postgresql+psycopg://postgres:p#a/s?sw0rd@127.0.0.1:1/x"},
                             "ROSSMANN_SYNC_API_STORE_URL"),
    "a shop id of -1": ({"ROSSMANN_WORLD_FILE": "WORLD_WITH_SHOP_MINUS_ONE"}, "ROSSMANN_WORLD_FILE"),
}


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_the_main_command_stops_with_one_line_naming_the_setting_and_no_secret(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from rossmann_local.domain.world import reference_world
    from rossmann_local.local.day import main

    settings, name = BAD_SETTINGS[case]
    for key, value in settings.items():
        if value == "WORLD_WITH_SHOP_MINUS_ONE":
            world = reference_world().model_dump(mode="json")
            world["shops"][0]["shop_id"] = -1
            value = str(tmp_path / "world.json")
            Path(value).write_text(__import__("json").dumps(world))
        monkeypatch.setenv(key, value)
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("configuration error:") and name in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not any(piece in "\n".join(err) for piece in ("p#a", "sw0rd", "s?s")), "no part of a password shown"


@pytest.mark.parametrize("day", ["2026-05-31", "2027-06-01"])
def test_a_day_outside_the_worlds_days_is_refused(day: str, capsys: pytest.CaptureFixture[str]) -> None:
    from rossmann_local.local.day import main

    assert main(["--day", day]) == 2
    assert "outside the world's days, 2026-06-01 to 2027-05-31" in capsys.readouterr().err


def test_an_instance_database_that_does_not_answer_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROSSMANN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv(DAGSTER_PG_URL, f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    assert dev.main() == 2
    err = capsys.readouterr().err
    assert f"configuration error: {DAGSTER_PG_URL}: the Dagster instance's database" in err, err
    monkeypatch.setenv(DAGSTER_PG_URL, "sqlite:///instance.db")
    assert dev.main() == 2
    assert "must name a Postgres database" in capsys.readouterr().err
