"""The Dagster UI in a real browser: ``make dev`` (dagster dev on the no-service defaults) on
loopback, driven by headless Chromium (Debian's package) through Playwright.

Screenshots go to ``test-artifacts/`` (ROSSMANN_TEST_ARTIFACTS overrides), kept after the run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy import func, select

from rossmann_local.defs.partitions import shop_and_shift
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.world import reference_world
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.models import Transaction
from rossmann_local.sync_api.server import LoopbackServer, sync_api_server
from rossmann_local.sync_api.store import CatalogueStore
from rossmann_local_tests.conftest import ADMIN, TEST_ADMIN_TOKEN, TEST_PASSWORD
from rossmann_local_tests.dagster_dev import (
    SHIFT_ASSETS,
    backfill_done,
    backfill_runs,
    launch_backfill,
    make_dev,
    most_at_once,
    reexecute_from_failure,
)
from rossmann_local_tests.helpers import deliveries_of, materialize_shift, receipts_of, stock_and_ledger

pytestmark = [pytest.mark.browser, pytest.mark.services]
# The UI renders slower on a loaded 2-core machine than Playwright's 5 s default for assertions
# (the asset graph once missed it during a full run): assertions wait up to 30 s.
expect.set_options(timeout=30_000)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("ROSSMANN_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-extensions", "--no-first-run"]
SHIFT, SHOP = "2026-06-01-09:00", "1"
# make dev runs a chain of 3 shops here: shop 3 fails in one test, and each shop is a run per shift
# (the reference 5 took 40 % longer for the same behaviour).
SHOPS = 3


def artifacts() -> Path:
    where = Path(os.environ.get("ROSSMANN_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    store = CatalogueStore(f"sqlite:///{tmp_path_factory.mktemp('ui-sync-api') / 'sync_api.sqlite'}")
    store.seed(reference_world(), password=TEST_PASSWORD)
    with sync_api_server(store, admin_token=TEST_ADMIN_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory, stand_in: LoopbackServer) -> Iterator[tuple[str, Path]]:
    """``make dev`` on a fresh data dir: its own broker, the shops on SQLite, ClickHouse on chDB, the
    instance on SQLite under the data dir; the stand-in Sync API is the module's."""
    data = tmp_path_factory.mktemp("ui") / "data"
    with make_dev(data, stand_in.url, artifacts() / "dagster-dev.log",
                  extra_env={"ROSSMANN_SHOP_COUNT": str(SHOPS)}) as url:
        yield url, data


@contextlib.contextmanager
def chromium_page() -> Iterator[Page]:
    """A page in headless Chromium (Debian's), closed afterwards. Dagster's "Join the community"
    dialog can appear at any moment of a first visit; Playwright clicks it away before any action
    it would block."""
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: sudo apt-get install chromium (make test does it when run "
                    "as root), or point ROSSMANN_TEST_CHROMIUM at one")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
            yield page
        finally:
            browser.close()


def dismiss_community_dialog(page: Page) -> None:
    """Dagster's first-visit "Join the community" dialog covers the page; skip it if it is up."""
    skip = page.get_by_role("button", name="Skip")
    if skip.is_visible():
        skip.click()


def test_a_shop_shift_partition_launched_from_the_asset_graph_succeeds(
        dagster_ui: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, data = dagster_ui
    shots = artifacts()
    with chromium_page() as page:
        # The schedules and the sensor show with their deliberate default states.
        page.goto(f"{url}/automation")
        for name, running in (("catalogue_changes_sensor", True), ("shop_shift_schedule", False)):
            row = page.locator("[data-index]").filter(has_text=name)
            toggle = row.locator("input[type=checkbox]").last
            (expect(toggle).to_be_checked if running else expect(toggle).not_to_be_checked)()

        # The asset graph of the shop group, every shift asset visible.
        page.goto(f"{url}/locations/rossmann_local/asset-groups/shop")
        for asset in ("synced_cache", "shift_deliveries", "shift_transactions", "shift_stock_levels"):
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
        dismiss_community_dialog(page)
        page.screenshot(path=shots / "ui-1-asset-graph.png")

        # Launch one shop x shift partition of all six assets from the shift job's graph (the global
        # graph also holds the per-day assets of the scenario group, whose partitions differ).
        page.goto(f"{url}/locations/rossmann_local/jobs/shop_shift_job")
        page.get_by_role("button", name="Materialize all").click()
        # Scoped by its title: Dagster's "Join the community" dialog can be up beside it.
        dialog = page.locator(".dagster-dialog").filter(has_text="Launch runs to materialize")
        expect(dialog).to_contain_text(f"Launch runs to materialize {len(SHIFT_ASSETS)} assets")
        shift_input = dialog.locator("input[placeholder^='ex: ']")
        shift_input.fill(SHIFT)
        shift_input.press("Enter")
        shop_item = page.get_by_role("menuitem").filter(has=page.get_by_text(SHOP, exact=True)).first
        for attempt in range(3):  # the community dialog, skipped by the handler, also closes the menu
            dialog.get_by_text("Select a partition or create one").click()
            try:
                shop_item.click(timeout=10_000)
                break
            except PlaywrightTimeout:
                assert attempt < 2, "the shop menu did not open"
        page.keyboard.press("Escape")
        expect(dialog).to_contain_text("1 partition")
        page.screenshot(path=shots / "ui-2-launch-dialog.png")
        dialog.get_by_role("button", name="Launch 1 run").click()

        # Follow the toast to the run and wait for it to finish.
        expect(page.get_by_text(re.compile(r"Launched run \w+"))).to_be_visible()
        view = page.get_by_role("link", name="View", exact=True).or_(page.get_by_role("button", name="View",
                                                                                      exact=True))
        view.first.click()
        expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
        status = page.get_by_text("Success", exact=True).or_(page.get_by_text("Failure", exact=True)).first
        expect(status).to_be_visible(timeout=240_000)
        dismiss_community_dialog(page)
        page.screenshot(path=shots / "ui-3-run.png")
        assert status.inner_text() == "Success", f"the run failed; see {shots / 'ui-3-run.png'}"
        expect(page.get_by_text(f"partition: {SHIFT}|{SHOP}").first).to_be_visible()

        # The shift's metadata as a person reads it: the per-terminal table and the hourly plot.
        page.goto(f"{url}/assets/shift_transactions")
        expect(page.get_by_text("per_terminal", exact=True).first).to_be_visible()
        expect(page.get_by_text("revenue_by_hour", exact=True).first).to_be_visible()
        dismiss_community_dialog(page)
        page.screenshot(path=shots / "ui-4-shift-metadata.png", full_page=True)

    # What the UI showed is what happened: the instance has the run, the shop database the receipts.
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))  # its dagster.yaml refers to it
    instance = dg.DagsterInstance.from_config(str(data / "dagster_home"))
    try:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": f"{SHIFT}|{SHOP}"}))
        assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
        materialized = instance.get_materialized_partitions(dg.AssetKey("transactions_report"))
        assert f"{SHIFT}|{SHOP}" in materialized
    finally:
        instance.dispose()
    shops = ShopDatabases(sqlite_dir=str(data / "shops"))
    with shops.transaction(int(SHOP)) as conn:
        assert conn.scalar(select(func.count()).select_from(Transaction)) > 100
    shops.dispose()


def partition_figures(url: str, asset: str, key: str, names: tuple[str, ...]) -> dict[str, str]:
    """The named metadata figures of one partition's latest materialization, as its page shows them."""
    with chromium_page() as page:
        page.goto(f"{url}/assets/{asset}?view=partitions&partition={quote(key)}")
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
        figures = {}
        for name in names:  # a metadata row reads "<name> <value>"; nested tables have other first cells
            row = page.locator("tr").filter(has=page.locator("td:first-child").get_by_text(name, exact=True))
            figures[name] = row.first.inner_text().split()[-1]
        page.screenshot(path=artifacts() / f"ui-5-partition-{asset}.png", full_page=True)
        return figures


DAYS = (date(2026, 6, 1), date(2026, 6, 2), date(2026, 6, 3))


def day_keys(day: date) -> list[str]:
    return [f"{day}-{start}|{shop}" for start in ("09:00", "15:00") for shop in range(1, SHOPS + 1)]


def shop_rows(shops: ShopDatabases, shop_id: int) -> tuple[list[tuple], list[tuple], dict[int, int]]:
    """Everything a shift writes into the shop database: receipts with their lines, deliveries with
    their lines, the stock at the end."""
    stock, _ = stock_and_ledger(shops, shop_id)
    return receipts_of(shops, shop_id), deliveries_of(shops, shop_id), stock


@pytest.fixture(scope="module")
def shifts_run_in_order(tmp_path_factory: pytest.TempPathFactory,
                        stand_in: LoopbackServer) -> dict[tuple[int, date], tuple[list, list, dict]]:
    """The same shop x shifts run in process, one shift after another over every shop (what make day
    runs), on a data dir of their own: each shop's rows after each day."""
    world = reference_world()
    shops = ShopDatabases(sqlite_dir=str(tmp_path_factory.mktemp("in-order") / "shops"))
    resources = {"shop_databases": shops, "sync_api": SyncApiClient(base_url=stand_in.url)}
    rows = {}
    for day in DAYS:
        for shift in shifts_of_day(world, day):
            materialize_shift(world, shift, 1, resources, last_shop=SHOPS)
        rows.update({(shop, day): shop_rows(shops, shop) for shop in range(1, SHOPS + 1)})
    shops.dispose()
    return rows


@pytest.fixture(scope="module")
def two_days_backfilled(dagster_ui: tuple[str, Path]) -> tuple[str, str, list[str]]:
    """The UI's backfill (its GraphQL mutation) of every shop over the first two days, once for the
    module's make dev: (backfill id, its final status, its partition keys). The failure test sells the
    day after, so it asks for this too and holds without the backfill test before it (alone, or on
    another pytest-xdist worker)."""
    url, _ = dagster_ui
    keys = day_keys(DAYS[0]) + day_keys(DAYS[1])
    backfill = launch_backfill(url, keys)
    return backfill, backfill_done(url, backfill), keys


def test_a_backfill_of_two_days_sells_each_shop_in_shift_order_and_writes_the_in_order_rows(
        dagster_ui: tuple[str, Path], two_days_backfilled: tuple[str, str, list[str]], stand_in: LoopbackServer,
        shifts_run_in_order: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UI's backfill (its GraphQL mutation) of every shop over two days, through the daemon, on
    shops that never ran before it: one backfill, no re-execution. Each run is one shop x shift; a
    shop's shift starts only once its previous shift is sold, shops side by side; the shop databases
    then hold row for row what the shifts run in order write, and ClickHouse reconciles."""
    url, data = dagster_ui
    backfill, status, keys = two_days_backfilled
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    instance = dg.DagsterInstance.from_config(str(data / "dagster_home"))
    shops = ShopDatabases(sqlite_dir=str(data / "shops"))
    try:
        assert status == "COMPLETED_SUCCESS"
        records = backfill_runs(instance, backfill)
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        # Each partition is sold by one run; its reports and stock messages go in that run or, once it
        # is materialized, in a run of their own beside the next shift's.
        sells = [r for r in records if dg.AssetKey("shift_transactions") in (r.dagster_run.asset_selection or ())]
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in sells) == sorted(keys), "one sale per partition"
        assert len(records) <= 2 * len(keys)
        assert most_at_once(records) >= 2, "the SQLite instance holds runs side by side"
        for shop in range(1, SHOPS + 1):
            own = sorted((r.dagster_run.tags["dagster/partition"], r) for r in sells
                         if r.dagster_run.tags["dagster/partition"].endswith(f"|{shop}"))
            for (_, before), (_, after) in itertools.pairwise(own):
                assert before.end_time <= after.start_time, f"shop {shop}: a shift began before its previous ended"
        for asset in SHIFT_ASSETS:
            assert set(keys) <= instance.get_materialized_partitions(dg.AssetKey(asset)), asset
        checks = [e.dagster_event.event_specific_data for r in records for e in instance.all_logs(r.dagster_run.run_id)
                  if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert checks and all(c.passed for c in checks), "stock never negative, reports reconciled"
        for shop in range(1, SHOPS + 1):
            assert shop_rows(shops, shop) == shifts_run_in_order[shop, DAYS[1]], f"shop {shop}"

        # One partition's page shows that shop's own shift.
        key = keys[2]  # the morning of shop 3
        shop, shift = shop_and_shift(reference_world(), key)
        with shops.transaction(shop.shop_id) as conn:
            own_totals = ledger.shift_totals(conn, shift)
        shown = partition_figures(url, "shift_transactions", key, ("receipts", "revenue", "partitions_in_run"))
        assert (int(shown["receipts"]), Decimal(shown["revenue"])) == (own_totals["receipts"], own_totals["revenue"])
        assert shown["partitions_in_run"] == "1"
        reported = partition_figures(url, "transactions_report", key, ("receipts", "revenue"))
        assert (int(reported["receipts"]), Decimal(reported["revenue"])) == (own_totals["receipts"],
                                                                               own_totals["revenue"])

        # The first day again, after the chain changed a price from a later day on: every receipt and
        # delivery is written again exactly as it was (one simulated clock), whatever order it runs in.
        before = {shop: receipts_of(shops, shop) for shop in range(1, SHOPS + 1)}
        later = httpx.post(f"{stand_in.url}/admin/products/1/prices/Berlin", timeout=10, headers=ADMIN,
                           json={"price": 1.99, "effective_at_utc": "2026-06-05T07:00:00Z"})
        assert later.status_code == 200, later.text
        assert backfill_done(url, launch_backfill(url, day_keys(DAYS[0]))) == "COMPLETED_SUCCESS"
        assert {shop: receipts_of(shops, shop) for shop in range(1, SHOPS + 1)} == before
    finally:
        shops.dispose()
        instance.dispose()


def test_one_shops_failure_fails_only_its_partitions_and_re_execution_runs_only_them(
        dagster_ui: tuple[str, Path], two_days_backfilled: tuple[str, str, list[str]], shifts_run_in_order: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shop 3's database is broken for a backfill of the day after the first two: only shop 3's
    partitions fail (its afternoon is never tried), every other shop's day is sold. Repaired,
    "Re-execute from failure" runs shop 3's two shifts alone, and every shop then holds the in-order rows."""
    url, data = dagster_ui
    assert two_days_backfilled[1] == "COMPLETED_SUCCESS", "the two days before it"
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    instance = dg.DagsterInstance.from_config(str(data / "dagster_home"))
    database = data / "shops" / "shop_3.sqlite"
    kept = database.with_suffix(".kept")
    database.rename(kept)
    database.write_bytes(b"this is not a SQLite database" * 100)
    shops = ShopDatabases(sqlite_dir=str(data / "shops"))
    try:
        keys = day_keys(DAYS[2])
        backfill = launch_backfill(url, keys)
        assert backfill_done(url, backfill) in ("COMPLETED_FAILED", "FAILED")
        failed = {r.dagster_run.tags["dagster/partition"] for r in backfill_runs(instance, backfill)
                  if r.dagster_run.status == dg.DagsterRunStatus.FAILURE}
        assert failed == {f"{DAYS[2]}-09:00|3"}, "the afternoon of shop 3 waits for its morning"
        materialized = instance.get_materialized_partitions(dg.AssetKey("transactions_report"))
        assert {k for k in keys if not k.endswith("|3")} <= materialized
        assert not {k for k in keys if k.endswith("|3")} & materialized

        kept.replace(database)
        again = reexecute_from_failure(url, backfill)
        assert backfill_done(url, again) == "COMPLETED_SUCCESS"
        assert {r.dagster_run.tags["dagster/partition"] for r in backfill_runs(instance, again)} == \
            {f"{DAYS[2]}-09:00|3", f"{DAYS[2]}-15:00|3"}, "only shop 3's partitions run again"
        for shop in range(1, SHOPS + 1):
            assert shop_rows(shops, shop) == shifts_run_in_order[shop, DAYS[2]], f"shop {shop}"
    finally:
        shops.dispose()
        instance.dispose()
