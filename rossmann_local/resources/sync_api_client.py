"""The shop's client of the general OLTP's Sync API (HTTP GET, JSON)."""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import TypeVar

import dagster as dg
import httpx
from pydantic import PrivateAttr, TypeAdapter, ValidationError

from rossmann_local.domain.catalogue import CategoryRecord, ProductRecord, iso_z
from rossmann_local.resources import resolved
from rossmann_local.settings import DEFAULT_SYNC_API_URL, SYNC_API_TIMEOUT, SYNC_API_URL, env_float

T = TypeVar("T")

# httpx logs every request URL at INFO, query string included; upstream passes passwords there.
logging.getLogger("httpx").setLevel(logging.WARNING)


class SyncApiError(dg.Failure):
    """The Sync API could not be reached or answered something unusable; nothing was applied.

    A Dagster ``Failure``, so it decides whether the asset's retry policy applies: an outage, a 5xx,
    a timeout or garbage may pass (``transient``); a 4xx is the request's own fault and fails at once."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(description=message, allow_retries=transient)
        self.transient = transient


class SyncApiClient(dg.ConfigurableResource):
    """``base_url`` from ``ROSSMANN_SYNC_API_URL``; a request that takes longer than
    ``timeout_seconds`` (``ROSSMANN_SYNC_API_TIMEOUT_SECONDS``) fails instead of hanging the run."""

    base_url: str = DEFAULT_SYNC_API_URL
    timeout_seconds: float = 10.0

    _http: httpx.Client | None = PrivateAttr(default=None)

    def _client(self) -> httpx.Client:
        """One HTTP client (and TLS context) per run, not one per request."""
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout_seconds)
        return self._http

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _get(self, path: str, params: dict[str, str | int], answer: TypeAdapter[T]) -> T:
        base_url = resolved(self.base_url) or ""
        url = base_url.rstrip("/") + path
        # Error messages name the path, never the query string: upstream passes passwords there.
        try:
            response = self._client().get(url, params=params)
        except httpx.TimeoutException:
            raise SyncApiError(f"Sync API at {base_url} did not answer GET {path} within "
                               f"{self.timeout_seconds:g} s ({SYNC_API_TIMEOUT})") from None
        except httpx.HTTPError as exc:
            raise SyncApiError(f"cannot reach the Sync API at {base_url} for GET {path} "
                               f"(check {SYNC_API_URL}): {exc.__class__.__name__}: {exc}") from None
        if response.status_code != 200:
            raise SyncApiError(f"Sync API answered {response.status_code} to GET {path}: {response.text[:200]!r}",
                               transient=not 400 <= response.status_code < 500)
        try:
            return answer.validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[:3]
            raise SyncApiError(f"Sync API sent an invalid answer to GET {path} ({exc.error_count()} errors, "
                               f"first: {first})") from None

    def categories_since(self, since: datetime, at: datetime | None = None) -> list[CategoryRecord]:
        """Every category version after ``since``, those taking effect later included (the shops keep
        the catalogue's history); ``at``: this sync's moment on the world's clock (a shift start)."""
        return self._get("/categories/sync", _sync_params(since, at), _CATEGORIES)

    def products_since(self, shop_id: int, since: datetime, at: datetime | None = None) -> list[ProductRecord]:
        """Every product version after ``since`` with the shop's city prices, as ``categories_since``."""
        return self._get("/products/sync", {"shop_id": shop_id, **_sync_params(since, at)}, _PRODUCTS)


def _sync_params(since: datetime, at: datetime | None) -> dict[str, str | int]:
    params: dict[str, str | int] = {"sync_utc_time": iso_z(since), "as_of": "history"}
    if at is not None:
        params["at"] = iso_z(at)
    return params


_CATEGORIES = TypeAdapter(list[CategoryRecord])
_PRODUCTS = TypeAdapter(list[ProductRecord])


def sync_api_client_from_env() -> SyncApiClient:
    url = dg.EnvVar(SYNC_API_URL) if os.environ.get(SYNC_API_URL) else DEFAULT_SYNC_API_URL
    return SyncApiClient(base_url=url, timeout_seconds=env_float(SYNC_API_TIMEOUT, 10.0))
