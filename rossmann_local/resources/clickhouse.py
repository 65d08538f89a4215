"""ClickHouse for the shops' reports, through clickhouse-connect, from one DSN.

``ROSSMANN_CLICKHOUSE_DSN`` is ``chdb:///<absolute dir>`` (the default, under ``ROSSMANN_DATA_DIR``:
the ClickHouse engine inside this process via clickhouse-connect's chDB backend) or
``http(s)://user:password@host:8123`` (a server, as in compose). The resource is a client factory:
what the reports read and write lives beside their schema (``reports/``), as the shop databases'
SQL lives in ``shop_db/``. Everything above the client is the same code; the DSN decides. chDB lets
one process open a directory at a time: a chDB client holds an exclusive lock on
``<dir>.lock`` while it is open (processes wanting it wait their turn) and is closed after each
use, so hold it only to read or write ClickHouse. The Dagster ops that use it are in the
``clickhouse`` pool, for a deployment to limit its ClickHouse load.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import clickhouse_connect
import dagster as dg
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from rossmann_local.reports.schema import DATABASE, ddl, schema_differences
from rossmann_local.resources import resolved
from rossmann_local.settings import CLICKHOUSE_DSN, ConfigError, data_dir

# clickhouse-connect warns "Unexpected Http Driver Exception" before raising the error we turn into a
# message naming the setting; with no logging configured (the one-shot commands) Python would print
# that warning bare on stderr. A NullHandler keeps it off stderr and still lets it reach any logging
# the application configures (Dagster's).
logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())

CLICKHOUSE_POOL = "clickhouse"
DSN_FORMS = "chdb:///<absolute dir> or http(s)://user:password@host:8123"


def default_dsn() -> str:
    return f"chdb://{data_dir() / 'clickhouse'}"


@dataclass(frozen=True)
class Dsn:
    """A ClickHouse DSN taken apart by hand: the password is everything between the first ``:`` of
    the user part and the last ``@``, so it may hold ``#``, ``/``, ``?`` or ``@`` as typed (or
    percent-encoded), where a URL parser would cut it and show a piece of it as a host or port."""

    scheme: str
    username: str
    password: str | None
    host: str
    port: int | None
    path: str

    @classmethod
    def parse(cls, dsn: str) -> Dsn:
        scheme, sep, rest = dsn.partition("://")
        if not sep or scheme not in ("chdb", "http", "https"):
            raise ConfigError(f"{CLICKHOUSE_DSN} is not a ClickHouse DSN (value not shown: it may hold a "
                              f"password); expected {DSN_FORMS}")
        userinfo, _, location = rest.rpartition("@")
        hostport, slash, path = location.partition("/")
        host, colon, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
        if colon and not port.isdigit():
            raise ConfigError(f"{CLICKHOUSE_DSN}: the port after {host!r} is not a number")
        username, has_password, password = userinfo.partition(":")
        return cls(scheme, unquote(username), unquote(password) if has_password else None, host,
                   int(port) if colon else None, slash + path)

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.password is not None else (f"{self.username}@" if self.username else "")
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{user}{self.host}{port}{self.path}"


def redacted(dsn: str) -> str:
    """The DSN without its password, for messages and logs (nothing of it when it does not parse)."""
    try:
        return Dsn.parse(dsn).redacted()
    except ConfigError:
        return f"<{CLICKHOUSE_DSN}, not shown>"


# DSNs whose schema this process has created already: the DDL runs once per process, not per use.
_SCHEMA_READY: set[str] = set()


def open_client(dsn: str) -> Client:
    """A connected client for the DSN, with ``shop_reports`` created; errors name the setting."""
    parts = Dsn.parse(dsn)
    if parts.scheme == "chdb":
        if parts.host or not parts.path.startswith("/"):
            raise ConfigError(f"{CLICKHOUSE_DSN}={parts.redacted()!r}: a chDB DSN needs an absolute directory, "
                              f"expected {DSN_FORMS}")
        try:
            Path(parts.path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{CLICKHOUSE_DSN}: cannot use {parts.path} for chDB ({exc.strerror})") from None
    elif not parts.host:
        raise ConfigError(f"{CLICKHOUSE_DSN}={parts.redacted()!r} is not a ClickHouse DSN: it names no host, "
                          f"expected {DSN_FORMS}")
    try:
        if parts.scheme == "chdb":
            client = clickhouse_connect.get_client(dsn=dsn)
        else:
            client = clickhouse_connect.get_client(
                host=parts.host, port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=parts.username or "default", password=parts.password or "",
                secure=parts.scheme == "https", database=parts.path.strip("/") or "__default__",
                connect_timeout=5, send_receive_timeout=60)
    except (ClickHouseError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if parts.password:
            first_line = first_line.replace(parts.password, "***")
        raise ConfigError(f"ClickHouse at {parts.redacted()} is not reachable (check {CLICKHOUSE_DSN}): "
                          f"{exc.__class__.__name__}: {first_line}") from None
    if dsn not in _SCHEMA_READY:
        try:
            for statement in ddl():
                client.command(statement)
            rows = client.query(f"SELECT table, name, type FROM system.columns WHERE database = '{DATABASE}'")
            present: dict[str, dict[str, str]] = {}
            for table, name, kind in rows.result_rows:
                present.setdefault(table, {})[name] = kind
            if differences := schema_differences(present):
                raise ConfigError(f"ClickHouse at {redacted(dsn)} holds {DATABASE} tables of another version: "
                                  f"{'; '.join(differences)}. reports/schema.py's SCHEMA_CHANGES has no statement "
                                  f"that upgrades them; drop the tables or add one.")
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
        """A client for one unit of work, closed afterwards (chDB: one process per directory, which
        this process holds meanwhile)."""
        dsn = self.resolved_dsn()
        with ExitStack() as stack:
            parts = Dsn.parse(dsn)
            if parts.scheme == "chdb" and parts.path.startswith("/"):
                stack.enter_context(chdb_directory_held(Path(parts.path)))
            client = open_client(dsn)
            stack.callback(client.close)
            yield client


_HELD_LOCK = threading.RLock()
_HOLDERS: dict[Path, tuple[int, int]] = {}  # chDB directory -> (lock file descriptor, clients open on it)


@contextmanager
def chdb_directory_held(directory: Path) -> Iterator[None]:
    """This process holds the chDB directory: an exclusive ``flock`` on ``<directory>.lock``, waited for
    while another process (a parallel backfill's other worker, a run under ``make dev``) holds it.
    Re-entrant within the process: a client opened inside another's use shares the hold."""
    directory = directory.resolve()
    with _HELD_LOCK:
        if directory in _HOLDERS:
            fd, count = _HOLDERS[directory]
            _HOLDERS[directory] = (fd, count + 1)
        else:
            directory.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{directory}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            _HOLDERS[directory] = (fd, 1)
    try:
        yield
    finally:
        with _HELD_LOCK:
            fd, count = _HOLDERS[directory]
            if count > 1:
                _HOLDERS[directory] = (fd, count - 1)
            else:
                del _HOLDERS[directory]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def clickhouse_from_env() -> ClickHouseReports:
    return ClickHouseReports(dsn=dg.EnvVar(CLICKHOUSE_DSN) if os.environ.get(CLICKHOUSE_DSN) else None)
