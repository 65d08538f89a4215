"""The deployment files parse and agree with the code (no Docker engine here: checked offline)."""

from __future__ import annotations

from pathlib import Path

import yaml

from rossmann_local import settings

ROOT = Path(__file__).resolve().parents[1]


def test_compose_parses_and_gives_the_code_its_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "clickhouse", "kafka", "sync-api", "dagster-webserver", "dagster-daemon"} <= set(services)
    env = services["dagster-daemon"]["environment"]
    assert "{shop_id}" in env[settings.SHOP_DB_URL]
    assert env[settings.SYNC_API_URL] == "http://sync-api:8765"
    assert "8765" in services["sync-api"]["command"]
    dsn = env[settings.CLICKHOUSE_DSN]
    assert dsn.startswith("http://default:") and dsn.endswith("@clickhouse:8123")
    assert "8123:8123" in services["clickhouse"]["ports"]
    assert env[settings.KAFKA_BOOTSTRAP_SERVERS] == "kafka:9092"
    assert "INTERNAL://kafka:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_instance_and_workspace_point_at_the_code() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "rossmann_local.definitions"
    instance = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert "postgres" in instance["storage"]
    assert instance["telemetry"]["enabled"] is False
