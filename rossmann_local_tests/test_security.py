"""Security basics: passwords come only from the environment and never reach run config, logs or
metadata; the stand-in never returns a password or its hash; SQL takes values as bound parameters."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster._serdes import serialize_value

from rossmann_local.defs import default_resources
from rossmann_local.domain.world import World
from rossmann_local.sync_api.server import LoopbackServer
from rossmann_local_tests.conftest import PG_ADMIN_URL, TEST_PASSWORD
from rossmann_local_tests.helpers import materialize_shift, shift_of

ROOT = Path(__file__).resolve().parents[1]
SECRET = "pw-that-must-never-leak"


@pytest.mark.postgres
def test_database_and_clickhouse_passwords_stay_out_of_run_config_logs_and_metadata(
        world: World, postgres_shops, sync_server: LoopbackServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords travel as Dagster EnvVars: resolved inside the run, shown nowhere."""
    template = postgres_shops.url_template.replace("postgres@", f"postgres:{SECRET}@")  # trust auth ignores it
    monkeypatch.setenv("ROSSMANN_SHOP_DB_URL", template)
    monkeypatch.setenv("ROSSMANN_CLICKHOUSE_DSN", f"chdb://{tmp_path / 'ch'}")
    monkeypatch.setenv("ROSSMANN_SYNC_API_URL", sync_server.url)
    resources = default_resources()
    assert isinstance(resources["shop_databases"].url_template, dg.EnvVar)
    with dg.instance_for_test() as instance:
        result = materialize_shift(world, shift_of(world), 1, resources, instance=instance,
                                   assets=("synced_cache", "shift_deliveries", "shift_transactions",
                                           "transactions_report"))
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert SECRET not in serialize_value(run)
        assert SECRET not in "".join(serialize_value(entry) for entry in instance.all_logs(result.run_id))


def test_unreachable_services_never_echo_a_password(world: World, sqlite_shops, sync_api,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from rossmann_local.resources.clickhouse import ClickHouseReports

    assert materialize_shift(world, shift_of(world), 1, {"shop_databases": sqlite_shops, "sync_api": sync_api}).success
    result = materialize_shift(world, shift_of(world), 1, {
        "shop_databases": sqlite_shops, "sync_api": sync_api,
        "clickhouse": ClickHouseReports(dsn=f"http://default:{SECRET}@127.0.0.1:1")},
        assets=("transactions_report",), raise_on_error=False)
    assert not result.success
    assert SECRET not in "".join(serialize_value(e) for e in result.all_events)


def test_the_stand_in_never_returns_a_password_or_its_hash(sync_server: LoopbackServer, world: World) -> None:
    shop, admin = world.shops[0], world.shops[0].admin_id
    employee = next(e for e in world.employees if e.employee_id == admin)
    answers = [
        httpx.get(f"{sync_server.url}/shops/authorize", params={"shop_id": shop.shop_id, "password": TEST_PASSWORD}),
        httpx.get(f"{sync_server.url}/employees/authorize", params={"email": employee.email,
                                                                   "password": TEST_PASSWORD}),
        httpx.get(f"{sync_server.url}/terminals/authorize", params={"shop_id": shop.shop_id,
                                                                   "terminal_id": shop.terminal_ids[0],
                                                                   "password": TEST_PASSWORD}),
        httpx.get(f"{sync_server.url}/terminals/get_available", params={"shop_id": shop.shop_id}),
        httpx.get(f"{sync_server.url}/categories/sync", params={"sync_utc_time": "2000-01-01T00:00:00Z"}),
        httpx.get(f"{sync_server.url}/products/sync", params={"shop_id": shop.shop_id,
                                                             "sync_utc_time": "2000-01-01T00:00:00Z"}),
        httpx.get(f"{sync_server.url}/shops/authorize", params={"shop_id": shop.shop_id, "password": "wrong"}),
        httpx.get(f"{sync_server.url}/openapi.json"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 200, 401, 200]
    def keys(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value).union(*(keys(v) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(keys(v) for v in value))
        return set()

    for answer in answers[:-1]:
        assert TEST_PASSWORD not in answer.text and "pbkdf2" not in answer.text.lower()
        assert not {k for k in keys(answer.json()) if any(w in k.lower() for w in ("password", "hash", "salt"))}


def test_sql_takes_values_as_bound_parameters_only() -> None:
    """Every SQL string built with an f-string interpolates only identifiers from constants
    (table, database and column names), never a value: values go in as bound parameters."""
    allowed = {"DATABASE", "TRANSACTIONS", "DELIVERY", "table", "where", "name", "quoted", "body", "time_column",
               "SHIFT_WHERE", "statement", "TABLES"}
    sql_words = ("SELECT ", "DELETE ", "INSERT ", "UPDATE ", "CREATE ", "DROP ", "ALTER ")
    checked = 0
    for path in (ROOT / "rossmann_local").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.JoinedStr):
                continue
            literal = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
            if not literal.strip().upper().startswith(sql_words):
                continue
            names = {ast.unparse(part.value) for part in node.values if isinstance(part, ast.FormattedValue)}
            assert names <= allowed, f"{path.name}:{node.lineno} puts {names - allowed} into SQL text"
            checked += 1
    assert checked >= 8, "the scan found the SQL it is meant to check"


def test_passwords_are_read_from_the_environment_only() -> None:
    """No password default or literal in the package: the stand-in's comes from
    ROSSMANN_SYNC_API_PASSWORD, the databases' and ClickHouse's inside their URLs from the environment."""
    for path in (ROOT / "rossmann_local").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "password" and isinstance(node.value, ast.Constant):
                assert node.value.value is None, f"{path.name}:{node.lineno} has a literal password"
    assert "@" not in PG_ADMIN_URL.split("//", 1)[1].split("@")[0] or ":" not in PG_ADMIN_URL.split("//")[1].split(
        "@")[0], "the tests' own Postgres URL carries no password either"
