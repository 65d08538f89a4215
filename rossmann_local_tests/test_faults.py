"""Faults (marker ``faults``; ``make test PYTEST_ARGS="-m faults"`` runs them alone): a Sync API that
answers 5xx, too slowly or with garbage, and a Postgres connection lost in the middle of a shift.
The report killed between its ClickHouse insert and its bookkeeping is in test_reports.py
(``test_a_failure_after_the_insert_then_a_rerun_leaves_one_copy``), marked the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select

from rossmann_local.domain.world import World
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop_db import ledger
from rossmann_local.shop_db.cache import sync_watermark
from rossmann_local.shop_db.models import Category, Product, Shift, Transaction
from rossmann_local.sync_api.server import LoopbackServer
from rossmann_local_tests.helpers import materialize_shift, receipts_of, shift_of

pytestmark = pytest.mark.faults


class MisbehavingSyncApi:
    """An ASGI app that answers every request the way a test scripts it: a status, a body, a delay."""

    def __init__(self) -> None:
        self.status, self.body, self.delay, self.requests = 200, b"[]", 0.0, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture
def misbehaving() -> Iterator[tuple[MisbehavingSyncApi, str]]:
    app = MisbehavingSyncApi()
    with LoopbackServer(app) as server:  # type: ignore[arg-type]
        yield app, server.url


@pytest.mark.parametrize(("status", "body", "delay", "says"), [
    (503, b'{"detail": "overloaded"}', 0.0, "Sync API answered 503"),
    (200, b'[{"category_id": "one", "name": 7}]', 0.0, "invalid answer"),
    (200, b"<html>surprise</html>", 0.0, "invalid answer"),
    (200, b"[]", 2.0, "did not answer GET /categories/sync within 0.5 s"),
])
def test_a_bad_sync_api_is_retried_a_bounded_number_of_times_then_fails_clearly_and_changes_nothing(
        world: World, sqlite_shops: ShopDatabases, misbehaving: tuple[MisbehavingSyncApi, str],
        status: int, body: bytes, delay: float, says: str) -> None:
    app, url = misbehaving
    app.status, app.body, app.delay = status, body, delay
    client = SyncApiClient(base_url=url, timeout_seconds=0.5)
    result = materialize_shift(world, shift_of(world), 1, {"shop_databases": sqlite_shops, "sync_api": client},
                               assets=("synced_cache",), raise_on_error=False)
    assert not result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 2, "the asset's retry policy: two more tries, then the failure"
    assert app.requests == 3, "one request per try: the categories fail first, products are never asked"
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    while error.cause is not None:
        error = error.cause
    assert error.cls_name == "SyncApiError" and says in error.message
    with sqlite_shops.transaction(1) as conn:
        assert conn.scalar(select(func.count()).select_from(Category)) == 0
        assert conn.scalar(select(func.count()).select_from(Product)) == 0
        assert sync_watermark(conn, "categories") is None and sync_watermark(conn, "products") is None


@pytest.mark.postgres
def test_a_postgres_connection_lost_mid_shift_fails_cleanly_and_the_retry_gives_the_same_shift(
        world: World, postgres_shops: ShopDatabases, sqlite_shops: ShopDatabases, sync_api: SyncApiClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    shift = shift_of(world)
    assert materialize_shift(world, shift, 2, {"shop_databases": postgres_shops, "sync_api": sync_api},
                             assets=("synced_cache", "shift_deliveries")).success
    original = ledger.insert_receipts

    def insert_then_lose_the_connection(conn: Any, *args: Any, **kwargs: Any) -> None:
        original(conn, *args, **kwargs)  # the receipts are written, not committed ...
        conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")  # ... and the server drops us

    monkeypatch.setattr(ledger, "insert_receipts", insert_then_lose_the_connection)
    lost = materialize_shift(world, shift, 2, {"shop_databases": postgres_shops, "sync_api": sync_api},
                             assets=("shift_transactions",), raise_on_error=False)
    assert not lost.success
    [failure] = [e for e in lost.all_events if e.is_step_failure]
    assert "terminating connection" in failure.step_failure_data.error.to_string()
    with postgres_shops.transaction(2) as conn:  # a new connection from the pool (pre-ping)
        assert conn.scalar(select(func.count()).select_from(Transaction)) == 0, "no half shift is visible"
        assert conn.scalar(select(func.count()).select_from(Shift).where(Shift.sales_recorded_at_utc.is_not(None))) == 0

    monkeypatch.setattr(ledger, "insert_receipts", original)
    assert materialize_shift(world, shift, 2, {"shop_databases": postgres_shops, "sync_api": sync_api},
                             assets=("shift_transactions",)).success
    assert materialize_shift(world, shift, 2, {"shop_databases": sqlite_shops, "sync_api": sync_api}).success
    assert receipts_of(postgres_shops, 2) == receipts_of(sqlite_shops, 2), "the retry gives the very same shift"
