"""Run the stand-in Sync API on loopback: in a background thread for the main command and the tests,
or in the foreground as a service (``python -m rossmann_local.sync_api``)."""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rossmann_local.domain.world import World
from rossmann_local.settings import (
    ADMIN_TOKEN_FILE,
    SYNC_API_ADMIN_TOKEN,
    SYNC_API_PASSWORD,
    SYNC_API_STORE_URL,
    ConfigError,
    data_dir,
)
from rossmann_local.sync_api.app import create_app
from rossmann_local.sync_api.store import CatalogueStore


def default_store_url() -> str:
    return os.environ.get(SYNC_API_STORE_URL) or f"sqlite:///{data_dir() / 'sync_api.sqlite'}"


def open_seeded_store(world: World, url: str | None = None) -> CatalogueStore:
    """The stand-in's store, seeded with the world once; a store that cannot be opened stops with one
    line naming ``ROSSMANN_SYNC_API_STORE_URL`` (its password not shown)."""
    url = url or default_store_url()
    try:
        store = CatalogueStore(url)
        store.seed(world, password=os.environ.get(SYNC_API_PASSWORD))
    except (SQLAlchemyError, OSError) as exc:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        try:
            parsed = make_url(url)
            shown = parsed.render_as_string(hide_password=True)
            if parsed.password:
                reason = reason.replace(str(parsed.password), "***")
        except ArgumentError:
            shown = "<not shown>"
        raise ConfigError(f"the Sync API stand-in's store {shown} cannot be opened (check {SYNC_API_STORE_URL}): "
                          f"{reason}") from None
    return store


def uvicorn_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    # uvicorn's own access log prints query strings, which carry passwords: ours logs paths only.
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")


class LoopbackServer:
    """An ASGI app on ``host``:``port`` (0 picks a free port) in a daemon thread, as a context manager."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = uvicorn.Server(uvicorn_config(app, host, port))
        self._thread = threading.Thread(target=self._server.run, name="sync-api", daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host} within {timeout:g} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()





def sync_api_server(store: CatalogueStore, host: str = "127.0.0.1", port: int = 0,
                    admin_token: str | None = None) -> LoopbackServer:
    """The stand-in Sync API over ``store``, served on loopback (admin endpoints open to ``admin_token``)."""
    return LoopbackServer(create_app(store, admin_token), host, port)


def local_admin_token(data: Path) -> str:
    """The admin token of a stand-in the local stack runs: ``ROSSMANN_SYNC_API_ADMIN_TOKEN``, or one
    made once and kept in the data dir (owner-only), where the ``change`` command finds it."""
    if token := os.environ.get(SYNC_API_ADMIN_TOKEN):
        return token
    path = data / ADMIN_TOKEN_FILE
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.write_text(secrets.token_urlsafe(24))
        partial.chmod(0o600)
        partial.replace(path)
    return path.read_text().strip()
