"""The README's main command: a simulated day of every shop through a Dagster instance."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.sensor import execute_sensor_iteration

from rossmann_local.defs.streaming import CATALOGUE_UPSERT_JOB
from rossmann_local.local.broker import LocalBroker
from rossmann_local.local.catalogue_sensor import CATALOGUE_SENSOR
from rossmann_local.local.day import main, run_day
from rossmann_local.local.instance import WORKSPACE, InstanceSensorCursor
from rossmann_local.local.stack import local_stack
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import WORLD_FILE, load_world
from rossmann_local_tests.helpers import receipts_of


def test_a_simulated_day_of_every_shop_runs_and_reruns_without_doubling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    first = capsys.readouterr().out
    assert re.search(r"^all\s+10/10\s", first, re.MULTILINE), first
    assert re.search(r"^all\s+(\d+)\s+\1\s+([\d,.]+)\s+\2\s+(\d+)\s+\3\s+yes\s", first, re.MULTILINE), \
        "ClickHouse's receipts, revenue and deliveries equal the shop databases'"
    assert [line.split()[:2] for line in first.splitlines()[4:9]] == [
        ["1", "Berlin"], ["2", "Nurnberg"], ["3", "Nurnberg"], ["4", "La"], ["5", "La"]]
    assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
    assert sorted(p.name for p in (tmp_path / "data" / "shops").glob("*.sqlite")) == [
        f"shop_{i}.sqlite" for i in range(1, 6)]

    assert main([]) == 0
    again = capsys.readouterr().out

    def figures(out: str) -> list[str]:
        """The shop and report tables and what the promotion charged (the streaming counts describe
        each run's own messages)."""
        lines = out.splitlines()[1:]
        return lines[:lines.index("Streaming (Kafka):")] + [line for line in lines if "receipts charged" in line]

    assert figures(again) == figures(first), "a re-run replaces the day with the same figures"
    assert "catalogue versions added to the shops' history: 0," in again, "the re-published promotion is one version"


def test_a_bad_setting_stops_with_a_message_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROSSMANN_SHOP_COUNT", "zero")
    assert main([]) == 2
    assert "ROSSMANN_SHOP_COUNT" in capsys.readouterr().err


@pytest.mark.postgres
def test_the_day_runs_on_postgres_shop_databases_from_the_environment(
        postgres_shops: ShopDatabases, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The URL reaches the runs as a Dagster EnvVar and the read-back outside the runs alike."""
    monkeypatch.setenv("ROSSMANN_SHOP_DB_URL", postgres_shops.url_template)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^all\s+10/10\s+1\d{3}\s", out, re.MULTILINE), out
    assert receipts_of(postgres_shops, 3), "the receipts are in the shop's Postgres database"


def test_unreachable_shop_databases_fail_with_the_setting_named(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROSSMANN_SHOP_DB_URL", "postgresql+psycopg://postgres@127.0.0.1:9/shop_{shop_id}")
    assert main([]) != 0
    captured = capsys.readouterr()
    assert "ROSSMANN_SHOP_DB_URL" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_make_dev_after_make_day_requests_no_run_for_messages_the_day_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The day ticks the catalogue sensor with the cursor the daemon keeps in the instance, so the
    daemon's first tick afterwards (what ``make dev`` starts) finds nothing new. Here the daemon's own
    sensor iteration runs against the workspace of ``make dev``, on the day's broker data."""
    assert main([]) == 0
    assert re.search(r"upsert runs requested by the sensor: [1-9]", capsys.readouterr().out)
    instance = dg.DagsterInstance.get()  # the day's instance (DAGSTER_HOME under the data dir)
    upserts = lambda: len(instance.get_runs(dg.RunsFilter(job_name=CATALOGUE_UPSERT_JOB)))  # noqa: E731
    runs_of_the_day = upserts()
    cursor = InstanceSensorCursor(instance, CATALOGUE_SENSOR)
    assert json.loads(cursor.read() or "{}").get("next_offsets"), "the day left its offsets in the instance"
    with LocalBroker(tmp_path / "data" / "kafka") as broker:  # as make dev starts it: the day's data, a new port
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
        with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(WORKSPACE)])) as workspace:
            list(execute_sensor_iteration(workspace, logging.getLogger("daemon"), None, None))
            sensor = next(s for location in workspace.create_request_context().get_code_location_entries().values()
                          for repo in location.code_location.get_repositories().values()
                          for s in repo.get_sensors() if s.name == CATALOGUE_SENSOR)
            ticks = instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id)
    assert [t.status for t in ticks] == [TickStatus.SKIPPED], [t.tick_data for t in ticks]
    assert ticks[0].run_ids == [] and upserts() == runs_of_the_day, "no upsert run for messages already applied"


def test_days_run_in_any_order_print_the_same_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """Each day's promotion is part of that day's catalogue history, not a re-publication of prices:
    running an earlier day after a later one, and the later one again, changes none of their figures."""
    def day(iso: str) -> list[str]:
        assert main(["--day", iso]) == 0
        out = capsys.readouterr().out
        return [line for line in out.splitlines()[1:] if line.startswith(("1 ", "2 ", "3 ", "4 ", "5 ", "all "))]

    first, second = day("2026-06-01"), day("2026-06-02")
    assert first != second
    assert day("2026-06-01") == first, "the earlier day, after the later one"
    assert day("2026-06-02") == second


def test_one_shops_failure_fails_only_that_shops_partitions(tmp_path: Path) -> None:
    """Shop 3's database cannot be opened (its file is a directory): the shift's 5-shop run fails,
    the shift runs again shop by shop, and the other shops' partitions are materialized by runs of
    their own, their reports matching, while shop 3's fail with its cause."""
    world = load_world()
    (tmp_path / "data" / "shops" / "shop_3.sqlite").mkdir(parents=True)
    with local_stack(world) as stack, dg.instance_for_test() as instance:
        days = {d.shop_id: d for d in run_day(world, world.start_date, stack.resources, instance)}
        materialized = instance.get_materialized_partitions(dg.AssetKey("transactions_report"))
    assert [days[shop].runs_ok for shop in (1, 2, 4, 5)] == [2, 2, 2, 2]
    assert all(not days[shop].runs_failed and days[shop].reports_match and days[shop].receipts
               for shop in (1, 2, 4, 5))
    assert days[3].runs_ok == 0 and len(days[3].runs_failed) >= 2
    assert all("shop_3" in failure for failure in days[3].runs_failed), days[3].runs_failed
    assert {key.split("|")[1] for key in materialized} == {"1", "2", "4", "5"} and len(materialized) == 8


def test_about_names_versions_services_and_data_without_creating_or_revealing_anything(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROSSMANN_", "KAFKA_"))}
    env.update(ROSSMANN_DATA_DIR=str(data), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
               ROSSMANN_CLICKHOUSE_DSN="http://default:s3cret@127.0.0.1:1")
    about = subprocess.run([sys.executable, "-m", "rossmann_local.local.about"], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert about.returncode == 0 and about.stderr == "", about.stderr
    out = about.stdout
    assert f"dagster {dg.__version__}" in out and "World: 5 shops" in out
    assert f"{data}, not created yet" in out and not data.exists(), "it makes nothing"
    assert "SQLite files (default)" in out and "shop 1: no database yet" in out
    assert "live mode: never run on this data dir" in out
    assert "127.0.0.1:1 does not answer" in out and "http://default:***@127.0.0.1:1: does not answer" in out
    assert "s3cret" not in out
    env[WORLD_FILE] = str(tmp_path / "missing.json")
    bad = subprocess.run([sys.executable, "-m", "rossmann_local.local.about"], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and WORLD_FILE in bad.stderr, bad.stderr
