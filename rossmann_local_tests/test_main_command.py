"""The README's main command: a simulated day of every shop through a Dagster instance."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from rossmann_local.defs import SHOP_SHIFT_JOB
from rossmann_local.defs.scenario_assets import DAY_SENSOR
from rossmann_local.defs.streaming import CATALOGUE_UPSERT_JOB
from rossmann_local.local import day as day_command
from rossmann_local.local.day import CATALOGUE_SENSOR, main
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import WORLD_FILE
from rossmann_local_tests.helpers import receipts_of

pytestmark = pytest.mark.services  # a command's local stack, dagster dev or a broker


def test_a_simulated_day_of_every_shop_runs_and_reruns_without_doubling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's command, through the daemon, then days in any order: each day's promotion is part of
    that day's catalogue history, not a re-publication of prices, so running an earlier day after a later
    one, and the later one again, changes none of their figures. (One test, so the suite pays for four
    days rather than seven: the preview, the engine's runs and the re-runs are checked on the same days.)"""
    assert main(["--dry-run"]) == 0
    preview = capsys.readouterr().out
    assert not (tmp_path / "data").exists(), "a dry run starts and writes nothing"
    for section in ("catalogue changes", "transactions: 3 of", "transaction_items: 3 of", "delivery_items: 3 of",
                    "oltp_update_product_quantity", "headers of the first"):
        assert section in preview, section
    previewed = [int(re.search(rf"{table}: 3 of (\d+)", preview)[1]) for table in ("transactions", "transaction_items")]

    assert main([]) == 0
    first = capsys.readouterr().out
    assert [int(n) for n in re.search(r"^1\s+Berlin\s+2/2\s+(\d+)\s+(\d+)", first, re.MULTILINE).groups()] == \
        previewed, "the dry run previews shop 1's day as it is sold: its receipts and lines"
    assert re.search(r"^all\s+10/10\s", first, re.MULTILINE), first
    assert re.search(r"^all\s+(\d+)\s+\1\s+([\d,.]+)\s+\2\s+(\d+)\s+\3\s+yes\s", first, re.MULTILINE), \
        "ClickHouse's receipts, revenue and deliveries equal the shop databases'"
    assert [line.split()[:2] for line in first.splitlines()[4:9]] == [
        ["1", "Berlin"], ["2", "Nurnberg"], ["3", "Nurnberg"], ["4", "La"], ["5", "La"]]
    assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
    assert sorted(p.name for p in (tmp_path / "data" / "shops").glob("*.sqlite")) == [
        f"shop_{i}.sqlite" for i in range(1, 6)]
    assert re.search(r"upsert runs requested by the sensor: [1-9]", first)
    the_days_runs_came_through_the_daemon_and_its_sensors()

    assert main(["--day", "2026-06-02"]) == 0
    second = capsys.readouterr().out
    assert main([]) == 0
    again = capsys.readouterr().out
    assert main(["--day", "2026-06-02"]) == 0
    second_again = capsys.readouterr().out

    def figures(out: str) -> list[str]:
        """The shop and report tables and what the promotion charged (the streaming counts describe
        each run's own messages)."""
        lines = out.splitlines()[1:]
        return lines[:lines.index("Streaming (Kafka):")] + [line for line in lines if "receipts charged" in line]

    def shop_lines(out: str) -> list[str]:
        return [line for line in out.splitlines()[1:] if line.startswith(("1 ", "2 ", "3 ", "4 ", "5 ", "all "))]

    assert shop_lines(second) != shop_lines(first)
    assert figures(again) == figures(first), "the earlier day again, after the later one: the same figures"
    assert "catalogue versions added to the shops' history: 0," in again, "the re-published promotion is one version"
    assert shop_lines(second_again) == shop_lines(second), "the later day again"


def the_days_runs_came_through_the_daemon_and_its_sensors() -> None:
    """make day is a client of Dagster's engine: its shift runs come through the run queue, and the
    upsert runs and the expected answers are the daemon's sensors' own runs, on the instance make dev
    opens (so make dev afterwards continues from the same sensor cursors)."""
    instance = dg.DagsterInstance.get()  # the day's instance (DAGSTER_HOME under the data dir)
    runs = instance.get_runs()
    by_job: dict[str, list[dg.DagsterRun]] = {}
    for run in runs:
        by_job.setdefault(run.job_name, []).append(run)
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.job_name, r.status) for r in runs]
    assert len(by_job[SHOP_SHIFT_JOB]) == 2, "one run per shift, over every shop"
    assert {r.tags.get("dagster/sensor_name") for r in by_job[CATALOGUE_UPSERT_JOB]} == {CATALOGUE_SENSOR}
    [answers] = by_job["__ASSET_JOB"]
    assert answers.tags.get("dagster/sensor_name") == DAY_SENSOR and answers.tags["dagster/partition"] == "2026-06-01"
    [check] = [e for e in instance.all_logs(answers.run_id)
               if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert check.dagster_event.event_specific_data.passed
    instance.dispose()


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


def test_one_shops_failure_fails_only_that_shops_partitions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Shop 3's database cannot be opened (its file is a directory): the shift's run over the 3 shops fails,
    the shift runs again shop by shop, and the other shops' partitions are materialized by runs of
    their own, their reports matching, while shop 3's fail with its cause. (The command's own check
    before the day would stop it at once, naming the setting: skipped here, the runs meet the fault.)"""
    monkeypatch.setenv("ROSSMANN_SHOP_COUNT", "3")  # a run per shop and shift after the failure: 3 are enough
    (tmp_path / "data" / "shops" / "shop_3.sqlite").mkdir(parents=True)
    monkeypatch.setattr(day_command, "preflight", lambda world, resources: None)
    assert main([]) == 1
    out = capsys.readouterr().out
    # shop, city (one or two words), shifts ok/run, receipts
    rows = {m[1]: (m[2], int(m[3])) for m in re.finditer(r"^(\d)\s+\D+?\s+(\d+/\d+)\s+(\d+)", out, re.MULTILINE)}
    assert [rows[shop][0] for shop in "12"] == ["2/2"] * 2 and rows["3"][0].startswith("0/"), out
    assert all(rows[shop][1] > 0 for shop in "12")
    failures = [line for line in out.splitlines() if line.startswith("FAILED 2026-06-01")]
    assert len(failures) == 2 and all("shop_3" in line for line in failures), out
    instance = dg.DagsterInstance.get()
    materialized = instance.get_materialized_partitions(dg.AssetKey("transactions_report"))
    instance.dispose()
    assert {key.split("|")[1] for key in materialized} == {"1", "2"} and len(materialized) == 4


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
