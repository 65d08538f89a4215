"""ClickHouse for the shops' reports, through clickhouse-connect, from one DSN.

``ROSSMANN_CLICKHOUSE_DSN`` is ``chdb:///<absolute dir>`` (the default, under ``ROSSMANN_DATA_DIR``:
the ClickHouse engine inside this process via clickhouse-connect's chDB backend) or
``http(s)://user:password@host:8123`` (a server, as in compose). The resource is a client factory:
what the reports read and write lives beside their schema (``reports/``), as the shop databases'
SQL lives in ``shop_db/``. Everything above the client is the same code; the DSN decides. chDB lets
one process open a directory at a time, so the client is closed after each use and the Dagster ops
that use it share the ``clickhouse`` pool (limit 1 in the default instance).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
import dagster as dg
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from rossmann_local.reports.schema import ddl
from rossmann_local.resources import resolved
from rossmann_local.settings import CLICKHOUSE_DSN, ConfigError, data_dir

CLICKHOUSE_POOL = "clickhouse"
DSN_FORMS = "chdb:///<absolute dir> or http(s)://user:password@host:8123"


def default_dsn() -> str:
    return f"chdb://{data_dir() / 'clickhouse'}"


def redacted(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# DSNs whose schema this process has created already: the DDL runs once per process, not per use.
_SCHEMA_READY: set[str] = set()


def open_client(dsn: str) -> Client:
    """A connected client for the DSN, with ``shop_reports`` created; errors name the setting."""
    parts = urlsplit(dsn)
    if parts.scheme == "chdb":
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(f"{CLICKHOUSE_DSN}={redacted(dsn)!r}: a chDB DSN needs an absolute directory, "
                              f"expected {DSN_FORMS}")
        Path(parts.path).mkdir(parents=True, exist_ok=True)
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{CLICKHOUSE_DSN}={redacted(dsn)!r} is not a ClickHouse DSN, expected {DSN_FORMS}")
    try:
        extra = {} if parts.scheme == "chdb" else {"connect_timeout": 5, "send_receive_timeout": 60}
        client = clickhouse_connect.get_client(dsn=dsn, **extra)
    except (ClickHouseError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"ClickHouse at {redacted(dsn)} is not reachable (check {CLICKHOUSE_DSN}): "
                          f"{exc.__class__.__name__}: {first_line}") from None
    if dsn not in _SCHEMA_READY:
        try:
            for statement in ddl():
                client.command(statement)
        except BaseException:
            client.close()
            raise
        _SCHEMA_READY.add(dsn)
    return client


class ClickHouseReports(dg.ConfigurableResource):
    """Where the reports go. ``dsn`` unset means the embedded chDB engine under the data dir."""

    dsn: str | None = None

    def resolved_dsn(self) -> str:
        return resolved(self.dsn) or default_dsn()

    @contextmanager
    def client(self) -> Iterator[Client]:
        """A client for one unit of work, closed afterwards (chDB: one process per directory)."""
        client = open_client(self.resolved_dsn())
        try:
            yield client
        finally:
            client.close()


def clickhouse_from_env() -> ClickHouseReports:
    return ClickHouseReports(dsn=dg.EnvVar(CLICKHOUSE_DSN) if os.environ.get(CLICKHOUSE_DSN) else None)
