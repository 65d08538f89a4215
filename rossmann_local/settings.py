"""Every environment setting the project reads, in one place, with errors that name the setting."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = "ROSSMANN_DATA_DIR"
SHOP_DB_URL = "ROSSMANN_SHOP_DB_URL"
SYNC_API_URL = "ROSSMANN_SYNC_API_URL"
SYNC_API_TIMEOUT = "ROSSMANN_SYNC_API_TIMEOUT_SECONDS"
SYNC_API_PASSWORD = "ROSSMANN_SYNC_API_PASSWORD"
SHOP_COUNT = "ROSSMANN_SHOP_COUNT"
WORLD_FILE = "ROSSMANN_WORLD_FILE"

DEFAULT_DATA_DIR = ".rossmann"
DEFAULT_SYNC_API_URL = "http://127.0.0.1:8765"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the setting so the user knows what to fix."""


def data_dir() -> Path:
    """Where the no-service defaults keep their files (shop SQLite files, Sync API store, Dagster home)."""
    return Path(os.environ.get(DATA_DIR) or DEFAULT_DATA_DIR).resolve()


def env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} must be positive")
    return value
