"""Backfills over shop groups side by side through the daemon's run queue (``make backfill``), and
chDB's directory held by one process at a time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from rossmann_local.domain.scenario import plan_day
from rossmann_local.domain.world import reference_world
from rossmann_local.local.backfill import ShopGroup, main, shop_groups
from rossmann_local.resources.clickhouse import ClickHouseReports
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.settings import load_scenario
from rossmann_local_tests.conftest import MadeDay
from rossmann_local_tests.helpers import receipts_of

pytestmark = pytest.mark.services  # a command's local stack, dagster dev or a broker


def test_shops_split_into_contiguous_groups_of_nearly_equal_size() -> None:
    assert shop_groups(reference_world(5), 2) == [ShopGroup(1, 3), ShopGroup(4, 5)]
    assert shop_groups(reference_world(100), 3) == [ShopGroup(1, 34), ShopGroup(35, 67), ShopGroup(68, 100)]
    assert shop_groups(reference_world(2), 4) == [ShopGroup(1, 1), ShopGroup(2, 2)], "no empty group"


def test_a_parallel_backfill_writes_exactly_what_one_worker_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two workers, a run per day each, against one worker with one run: the same receipts in every
    shop database, ClickHouse equal to them, and each group's runs in shift order on one instance."""
    monkeypatch.setenv("ROSSMANN_SHOP_COUNT", "4")
    assert main(["--days", "2", "--workers", "2", "--days-per-run", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 shops, 16 shop x shift partitions, 2 shop group(s), 4 runs" in out, out
    assert re.search(r"receipts: ([\d,]+) in the shop databases, \1 reported to ClickHouse", out), out
    assert re.search(r"revenue: ([\d,.]+) EUR in the shop databases, \1 EUR reported", out), out
    parallel = {shop: receipts_of(ShopDatabases(), shop) for shop in range(1, 5)}
    instance = dg.DagsterInstance.from_config(str(tmp_path / "data" / "dagster_home"))
    runs = sorted(instance.get_runs(dg.RunsFilter(job_name="shop_shift_job")),
                  key=lambda r: r.tags["dagster/asset_partition_range_start"])
    assert [(r.status, r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
            for r in runs] == [
        (dg.DagsterRunStatus.SUCCESS, "2026-06-01-09:00|1", "2026-06-01-15:00|2"),
        (dg.DagsterRunStatus.SUCCESS, "2026-06-01-09:00|3", "2026-06-01-15:00|4"),
        (dg.DagsterRunStatus.SUCCESS, "2026-06-02-09:00|1", "2026-06-02-15:00|2"),
        (dg.DagsterRunStatus.SUCCESS, "2026-06-02-09:00|3", "2026-06-02-15:00|4")]
    instance.dispose()

    monkeypatch.setenv("ROSSMANN_DATA_DIR", str(tmp_path / "one_worker"))
    assert main(["--days", "2", "--workers", "1"]) == 0
    assert "1 shop group(s), 1 runs" in capsys.readouterr().out
    one_worker = {shop: receipts_of(ShopDatabases(), shop) for shop in range(1, 5)}
    assert all(parallel[shop] for shop in parallel) and parallel == one_worker


def test_a_backfill_under_a_scenario_writes_make_days_rows(messy_day: MadeDay,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The chain's day job runs for each day before its shifts (the scenario's changes and its faults on
    the stream), its late-changes job after them (the shifts they fall into sold again): the shop
    databases end row for row as make day leaves them, and the reports equal the shop databases."""
    world, scenario = reference_world(), load_scenario("messy-day")
    assert scenario is not None
    assert main(["--days", "1", "--workers", "1", "--scenario", "messy-day"]) == 0
    out = capsys.readouterr().out
    day = world.start_date
    plan = plan_day(scenario, world, day)
    assert (f"{len(plan.changes)} catalogue changes entered and "
            f"{len(plan.faults)} stream faults delivered by chain_catalogue_day_job") in out, out
    assert re.search(rf"{len(plan.late)} late catalogue changes entered by chain_late_changes_job after the "
                     r"shifts; [1-9]\d* shop run\(s\) sold their shifts again", out), out
    assert re.search(r"receipts: ([\d,]+) in the shop databases, \1 reported", out), out
    backfilled = {shop.shop_id: receipts_of(ShopDatabases(), shop.shop_id) for shop in world.shops}
    made = messy_day.receipts  # make day --scenario messy-day, on a data dir of its own
    assert all(made.values()) and backfilled == made, "one clock: the backfill's rows are make day's"
    assert main(["--days", "1", "--scenario", "no-such-scenario"]) == 2


def test_a_bad_backfill_setting_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(["--days", "400"]) == 2
    assert "--from 2026-06-01 --days 400 is outside the world's days" in capsys.readouterr().err


def test_a_chdb_directory_is_held_by_one_process_at_a_time(tmp_path: Path) -> None:
    """Another process's client waits until this one's is closed (chDB lets one process open a
    directory), instead of failing: parallel workers' report steps take turns at writing."""
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    held, released = tmp_path / "held", tmp_path / "released"
    holder = f"""
import pathlib, time
from rossmann_local.resources.clickhouse import ClickHouseReports
with ClickHouseReports(dsn={dsn!r}).client() as client:
    client.command("SELECT 1")
    pathlib.Path({str(held)!r}).write_text("yes")
    time.sleep(1.5)
    pathlib.Path({str(released)!r}).write_text(repr(time.time()))
"""
    process = subprocess.Popen([sys.executable, "-c", holder], env={**os.environ, "TZ": "UTC"})
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the holder did not open chDB"
            time.sleep(0.05)
        with ClickHouseReports(dsn=dsn).client() as client:
            opened = time.time()
            assert client.query("SELECT 42").result_rows == [(42,)]
    finally:
        assert process.wait(timeout=60) == 0
    assert opened >= float(released.read_text())
