"""Every environment setting the project reads, in one place, with errors that name the setting."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from rossmann_local.domain.scenario import Scenario, ScenarioError, parse_scenario
from rossmann_local.domain.world import World, reference_world

T = TypeVar("T", int, float)

DATA_DIR = "ROSSMANN_DATA_DIR"
SHOP_DB_URL = "ROSSMANN_SHOP_DB_URL"
SYNC_API_URL = "ROSSMANN_SYNC_API_URL"
SYNC_API_TIMEOUT = "ROSSMANN_SYNC_API_TIMEOUT_SECONDS"
SYNC_API_PASSWORD = "ROSSMANN_SYNC_API_PASSWORD"
SYNC_API_ADMIN_TOKEN = "ROSSMANN_SYNC_API_ADMIN_TOKEN"
SYNC_API_STORE_URL = "ROSSMANN_SYNC_API_STORE_URL"
CLICKHOUSE_DSN = "ROSSMANN_CLICKHOUSE_DSN"
KAFKA_BOOTSTRAP_SERVERS = "KAFKA_BOOTSTRAP_SERVERS"
SHOP_COUNT = "ROSSMANN_SHOP_COUNT"
WORLD_FILE = "ROSSMANN_WORLD_FILE"
SCENARIO = "ROSSMANN_SCENARIO"
# The no-service instance's storage on Postgres (dagster-postgres) instead of SQLite: make day, make dev,
# make backfill and make live. Compose does not give it: its instance is its own dagster.yaml.
DAGSTER_PG_URL = "ROSSMANN_DAGSTER_PG_URL"

# Every setting above: the deployment test checks compose provides what the code reads.
ALL_SETTINGS = (DATA_DIR, SHOP_DB_URL, SYNC_API_URL, SYNC_API_TIMEOUT, SYNC_API_PASSWORD, SYNC_API_ADMIN_TOKEN,
                SYNC_API_STORE_URL,
                CLICKHOUSE_DSN, KAFKA_BOOTSTRAP_SERVERS, SHOP_COUNT, WORLD_FILE, SCENARIO, DAGSTER_PG_URL)

DEFAULT_DATA_DIR = ".rossmann"
DEFAULT_SYNC_API_URL = "http://127.0.0.1:8765"
# Where the local stack keeps the stand-in's admin token, in the data dir (when the environment gives none).
ADMIN_TOKEN_FILE = "sync_api_admin_token"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the setting so the user knows what to fix."""


def data_dir() -> Path:
    """Where the no-service defaults keep their files (shop SQLite files, Sync API store, Dagster home)."""
    return Path(os.environ.get(DATA_DIR) or DEFAULT_DATA_DIR).resolve()


def require(name: str) -> str:
    """A setting that has no no-service default where it is used (e.g. the deployment's one-shots)."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _env_number(name: str, default: T, parse: Callable[[str], T], lowest: T, what: str) -> T:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a finite number")
    if value < lowest:  # type: ignore[operator]
        raise ConfigError(f"{name}={value} must be at least {lowest}")
    return value


def env_int(name: str, default: int, minimum: int = 1) -> int:
    return _env_number(name, default, int, minimum, "a whole number")


def env_float(name: str, default: float, minimum: float = 0.001, maximum: float = 86_400.0) -> float:
    value = _env_number(name, default, float, minimum, "a number")
    if value > maximum:
        raise ConfigError(f"{name}={value:g} must be at most {maximum:g}")
    return value


def load_world() -> World:
    """The world the environment asks for: a JSON file (``ROSSMANN_WORLD_FILE``), a shop count
    (``ROSSMANN_SHOP_COUNT``), or the reference five shops. ``python -m rossmann_local.settings``
    prints it, as a file to start a custom world from."""
    world_file = os.environ.get(WORLD_FILE)
    if world_file:
        path = Path(world_file)
        if not path.is_file():
            raise ConfigError(f"{WORLD_FILE}={world_file!r} is not a readable file")
        try:
            return World.model_validate_json(path.read_text())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'world'}: {e['msg']}"
                                 for e in exc.errors(include_url=False)[:5])
            raise ConfigError(f"{WORLD_FILE}={world_file!r} is not a valid world: {problems}") from None
    return reference_world(shop_count=env_int(SHOP_COUNT, 5))


SCENARIOS_DIR = Path(__file__).parent / "scenarios"


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))


def load_scenario(chosen: str | None = None) -> Scenario | None:
    """The scenario ``chosen`` names (``--scenario``), else ``ROSSMANN_SCENARIO``: a shipped scenario's
    name (``rossmann_local/scenarios/<name>.toml``) or a TOML file; none, the world as it is."""
    chosen = chosen or os.environ.get(SCENARIO)
    if not chosen:
        return None
    path = SCENARIOS_DIR / f"{chosen}.toml" if chosen in shipped_scenarios() else Path(chosen)
    if not path.is_file():
        raise ConfigError(f"{SCENARIO} (or --scenario) {chosen!r} is neither a shipped scenario "
                          f"({', '.join(shipped_scenarios())}) nor a readable file")
    try:
        return parse_scenario(path.read_text(), str(path.name if path.parent == SCENARIOS_DIR else path))
    except ScenarioError as exc:
        raise ConfigError(str(exc)) from None


if __name__ == "__main__":
    print(load_world().model_dump_json(indent=2))
