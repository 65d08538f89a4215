"""Security basics: passwords come only from the environment and never reach run config, logs or
metadata; the stand-in never returns a password or its hash; SQL takes values as bound parameters."""

from __future__ import annotations

import ast
import asyncio
import json
import statistics
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster._serdes import serialize_value

from rossmann_local.defs import default_resources
from rossmann_local.domain.world import World
from rossmann_local.sync_api.app import FAILED_LOGINS_PER_ADDRESS_PER_MINUTE, FAILED_LOGINS_PER_MINUTE
from rossmann_local.sync_api.server import LoopbackServer, sync_api_server
from rossmann_local_tests.conftest import ADMIN, TEST_PASSWORD, pg_admin_url
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
               "SHIFT_WHERE", "statement", "TABLES", "sort_key"}
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
    assert "@" not in pg_admin_url().split("//", 1)[1].split("@")[0] or ":" not in pg_admin_url().split("//")[1].split(
        "@")[0], "the tests' own Postgres URL carries no password either"


# --- the stand-in's doors ----------------------------------------------------------------------


def test_the_admin_endpoints_need_the_token(sync_server: LoopbackServer, store) -> None:
    url = f"{sync_server.url}/admin/products/1/prices/Berlin"
    body = {"price": 0.01}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer guess"}).status_code == 401
    assert httpx.post(f"{sync_server.url}/admin/categories/3", json={"name": "<script>"}).status_code == 401
    assert store.unpublished() == [], "nothing changed without the token"
    assert httpx.post(url, json=body, headers=ADMIN).status_code == 200


def test_without_a_configured_token_the_admin_endpoints_are_closed(store) -> None:
    with sync_api_server(store) as closed:
        answer = httpx.post(f"{closed.url}/admin/categories/3", json={"name": "x"}, headers=ADMIN)
    assert answer.status_code == 401 and "ROSSMANN_SYNC_API_ADMIN_TOKEN" in answer.json()["detail"]


HOSTILE_EDITS = {
    "NUL in a name": ("/admin/categories/3", {"name": "Baby\u0000Care"}),
    "lone surrogate in a name": ("/admin/categories/3", b'{"name": "\\ud800"}'),
    "a price the shops cannot sum": ("/admin/products/1/prices/Berlin", {"price": 9999999999.99}),
    "huge id": ("/admin/categories/99999999999999999999", {"name": "x"}),
    "odd time zone": ("/admin/categories/3", {"name": "x", "effective_at_utc": "0001-01-01T00:00:00+23:59"}),
}


@pytest.mark.parametrize("case", HOSTILE_EDITS)
def test_a_bad_edit_answers_422_stores_nothing_and_echoes_nothing(sync_server: LoopbackServer, store,
                                                                 case: str) -> None:
    path, body = HOSTILE_EDITS[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = httpx.post(sync_server.url + path, content=content,
                        headers={**ADMIN, "content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert "Traceback" not in answer.text and "\\u0000" not in answer.text and "input" not in answer.json()
    assert store.unpublished() == []


def test_a_change_dated_after_the_worlds_end_is_a_conflict_and_stores_nothing(sync_server: LoopbackServer,
                                                                             store) -> None:
    """Well-formed (the contract cannot know the world's end), so 409, not 422."""
    answer = httpx.post(sync_server.url + "/admin/products/1/prices/Berlin", headers=ADMIN,
                        json={"price": 0.01, "effective_at_utc": "2099-01-01T00:00:00Z"})
    assert answer.status_code == 409 and "after the world's end" in answer.json()["detail"], answer.text
    assert store.unpublished() == []


@pytest.mark.parametrize("query", [
    {"path": "/categories/sync", "sync_utc_time": "0001-01-01T00:00:00+23:59"},
    {"path": "/products/sync", "shop_id": 10**30, "sync_utc_time": "0001-01-01T00:00:00Z"},
    {"path": "/terminals/get_available", "shop_id": -1},
    {"path": "/employees/authorize", "email": "a@b", "password": "x" * 1000},
])
def test_bad_query_values_answer_422(sync_server: LoopbackServer, query: dict) -> None:
    path = query.pop("path")
    answer = httpx.get(sync_server.url + path, params=query)
    assert answer.status_code == 422 and "Traceback" not in answer.text


def test_a_lone_surrogate_anywhere_is_no_500(sync_server: LoopbackServer) -> None:
    for target in ("/employees/authorize?email=%ED%A0%80&password=x",
                   "/terminals/get_available?shop_id=%ED%A0%80"):
        assert httpx.get(sync_server.url + target).status_code in (401, 422)


def test_a_big_body_is_refused_before_it_is_read(sync_server: LoopbackServer) -> None:
    url = f"{sync_server.url}/admin/categories/3"
    declared = httpx.post(url, content=b"x" * (1024 * 1024), headers=ADMIN)
    assert declared.status_code == 413

    def chunks():
        for _ in range(64):
            yield b"x" * 16384

    assert httpx.post(url, content=chunks(), headers=ADMIN).status_code == 413


def test_an_unknown_user_and_a_wrong_password_answer_the_same_in_similar_time(
        sync_server: LoopbackServer, world: World) -> None:
    employee = world.employees[0]
    url = f"{sync_server.url}/employees/authorize"

    def timed(email: str) -> tuple[float, httpx.Response]:
        started = time.perf_counter()
        answer = httpx.get(url, params={"email": email, "password": "wrong"})
        return time.perf_counter() - started, answer

    unknown = [timed("nobody@example.org") for _ in range(4)]
    wrong = [timed(employee.email) for _ in range(4)]
    assert {(a.status_code, a.text) for _, a in unknown + wrong} == {(401, '{"detail":"wrong e-mail or password"}')}
    ratio = statistics.median(t for t, _ in unknown) / statistics.median(t for t, _ in wrong)
    assert 0.5 < ratio < 2, f"both run one PBKDF2; an unknown user answered {ratio:.2f}x as long"


def test_failed_password_checks_are_bounded_per_client_and_never_lock_the_store(
        sync_server: LoopbackServer, world: World) -> None:
    """50 concurrent wrong passwords beside concurrent shop syncs: no 500 ("database is locked" once),
    at most FAILED_LOGINS_PER_MINUTE answered 401, the rest 429; every sync succeeds."""
    async def storm() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(base_url=sync_server.url, timeout=30) as client:
            logins = [client.get("/employees/authorize", params={"email": world.employees[0].email,
                                                                 "password": f"guess{i}"}) for i in range(50)]
            syncs = [client.get("/products/sync", params={"shop_id": 1 + i % 5,
                                                          "sync_utc_time": "0001-01-01T00:00:00Z"}) for i in range(20)]
            answers = await asyncio.gather(*logins, *syncs)
        return [a.status_code for a in answers[:50]], [a.status_code for a in answers[50:]]

    logins, syncs = asyncio.run(storm())
    assert set(syncs) == {200}
    assert set(logins) <= {401, 429} and logins.count(401) <= FAILED_LOGINS_PER_MINUTE and 429 in logins
    blocked = httpx.get(f"{sync_server.url}/employees/authorize", params={"email": world.employees[0].email,
                                                                           "password": "z"})
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "60"


def test_wrong_passwords_for_one_account_do_not_lock_out_the_others_behind_the_same_address(
        sync_server: LoopbackServer, world: World) -> None:
    """Shops behind one shared address (a NAT): another account's failed checks leave a shop's right
    password working; a spray over many accounts of one address still meets a bound."""
    for i in range(FAILED_LOGINS_PER_MINUTE + 2):
        httpx.get(f"{sync_server.url}/shops/authorize", params={"shop_id": 2, "password": f"guess{i}"})
    assert httpx.get(f"{sync_server.url}/shops/authorize",
                     params={"shop_id": 2, "password": "guess"}).status_code == 429
    own = httpx.get(f"{sync_server.url}/shops/authorize", params={"shop_id": 1, "password": TEST_PASSWORD})
    assert own.status_code == 200 and own.json()["shop_id"] == 1
    sprayed = [httpx.get(f"{sync_server.url}/employees/authorize",
                         params={"email": f"nobody{i}@example.org", "password": "x"}).status_code
               for i in range(FAILED_LOGINS_PER_ADDRESS_PER_MINUTE)]
    assert sprayed.count(401) <= FAILED_LOGINS_PER_ADDRESS_PER_MINUTE - FAILED_LOGINS_PER_MINUTE and 429 in sprayed
