"""``make about``: the project's health at a glance, for a user.

Versions, the world in use, which services each part talks to (the no-service defaults or what the
environment names), whether each answers now, and where the data lives and how big it is. It starts
nothing, writes nothing and never opens the chDB directory (a running ``make dev`` may hold it).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import click
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from rossmann_local import commandline
from rossmann_local.local.processes import data_dir_holder
from rossmann_local.resources.clickhouse import redacted
from rossmann_local.resources.live_clock import LiveClockFile
from rossmann_local.resources.shop_databases import shop_database_url
from rossmann_local.settings import (
    CLICKHOUSE_DSN,
    DATA_DIR,
    KAFKA_BOOTSTRAP_SERVERS,
    SHOP_DB_URL,
    SYNC_API_URL,
    WORLD_FILE,
    ConfigError,
    data_dir,
    load_world,
)
from rossmann_local.shop_db.models import Shift
from rossmann_local.sync_api.server import default_store_url

PACKAGES = ("dagster", "dagster-webserver", "dagster-postgres", "sqlalchemy", "psycopg", "confluent-kafka",
            "clickhouse-connect", "chdb", "fastapi", "pydantic", "noida-db")
ROOT = Path(__file__).resolve().parents[2]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "not a git checkout"


def _size(path: Path) -> str:
    if not path.exists():
        return "not created yet"
    total = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return f"{total / 1024 / 1024:,.1f} MiB"


def _answers(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=2):
            return "answers"
    except OSError as exc:
        return f"does not answer ({exc.strerror or exc})"


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"//{url}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _latest_sold_shift(url: str) -> str:
    """The latest shift with sales in one shop database (read only; a missing SQLite file is not made)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return "no database yet"
    engine = create_engine(url, connect_args={"connect_timeout": 3} if parsed.get_backend_name() != "sqlite" else {})
    try:
        with engine.connect() as conn:
            latest = conn.scalar(select(func.max(Shift.shift_start)).where(Shift.sales_recorded_at_utc.is_not(None)))
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"cannot read it: {cause[0] if cause else type(exc).__name__}"
    finally:
        engine.dispose()
    return f"latest shift sold starts {latest:%Y-%m-%d %H:%M} UTC" if latest else "no shift sold yet"


def _live_mode(timezone: str) -> str:
    """Where live mode's clock stands (make live), read from its clock file."""
    state = LiveClockFile().read()
    if state is None:
        return "  live mode: never run on this data dir (make live)"
    reached = state.sim_reached.astimezone(ZoneInfo(timezone))
    return (f"  live mode: {'running' if state.running else 'stopped'} at x{state.speed:g}, simulated time "
            f"{reached:%Y-%m-%d %H:%M}{'' if state.running else ' (make live resumes there)'}")


def report() -> list[str]:
    data = data_dir()
    world = load_world()
    lines = [f"rossmann_local {_version('rossmann_local')} ({_commit()}), Python {platform.python_version()}",
             "  " + ", ".join(f"{p} {_version(p)}" for p in PACKAGES), ""]
    last_day = world.end_date
    lines += [f"World: {len(world.shops)} shops, {len(world.products)} products, {world.days} days "
              f"{world.start_date}..{last_day}, seed {world.seed}, time zone {world.timezone}"
              f" ({'from ' + os.environ[WORLD_FILE] if os.environ.get(WORLD_FILE) else 'the reference world'})", ""]

    holder = data_dir_holder(data)
    lines += [f"Data directory ({DATA_DIR if os.environ.get(DATA_DIR) else 'default'}): "
              f"{data}, {_size(data)}", f"  in use by: {holder or 'nothing now'}", _live_mode(world.timezone), ""]

    lines.append("Services:")
    template = os.environ.get(SHOP_DB_URL)
    first_shop = world.shops[0].shop_id
    if template:
        url = shop_database_url(first_shop, template, data / "shops")
        where = make_url(url).render_as_string(hide_password=True)
        lines.append(f"  shop databases  Postgres ({SHOP_DB_URL}), shop {first_shop}: {where}")
    else:
        url = shop_database_url(first_shop, None, data / "shops")
        lines.append(f"  shop databases  SQLite files (default), {data / 'shops'}: {_size(data / 'shops')}")
    lines.append(f"                  shop {first_shop}: {_latest_sold_shift(url)}")

    dsn = os.environ.get(CLICKHOUSE_DSN)
    if dsn and not dsn.startswith("chdb"):
        lines.append(f"  ClickHouse      HTTP ({CLICKHOUSE_DSN}) {redacted(dsn)}: {_answers(*_host_port(dsn, 8123))}")
    else:
        path = Path(dsn.split("://", 1)[1]) if dsn else data / "clickhouse"
        lines.append(f"  ClickHouse      chDB in process ({'set' if dsn else 'default'}), {path}: {_size(path)}")

    servers = os.environ.get(KAFKA_BOOTSTRAP_SERVERS)
    if servers:
        first = servers.split(",")[0]
        answer = _answers(*_host_port(first, 9092))
        lines.append(f"  Kafka           {KAFKA_BOOTSTRAP_SERVERS}={servers}: {first} {answer}")
    else:
        lines.append(f"  Kafka           a local broker (noida-db) while make day / make live / make dev runs, data in "
                     f"{data / 'kafka'}: {_size(data / 'kafka')}")

    api = os.environ.get(SYNC_API_URL)
    if api:
        lines.append(f"  Sync API        {SYNC_API_URL}={api}: {_answers(*_host_port(api, 80))}")
    else:
        store = make_url(default_store_url()).render_as_string(hide_password=True)
        lines.append("  Sync API        the stand-in on loopback while make day / make live / make dev runs (make dev: "
                     "127.0.0.1:8765 unless taken), "
                     f"store {store}")
    lines.append(f"  Dagster         instance {data / 'dagster_home'}: {_size(data / 'dagster_home')}")
    return lines


@click.command(name="about", help="The project's health at a glance: versions, the world, the services each part "
               "uses and whether they answer, where the data lives.")
def about_command() -> int:
    try:
        print("\n".join(report()))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return commandline.run(about_command, argv, "rossmann about")


if __name__ == "__main__":
    sys.exit(main())
