"""The chain's web/admin side of the catalogue: changes entered in the Sync API through its admin
endpoints (the stand-in's ``/admin/...``), each in effect from its simulated time. The Sync API then
publishes each on Kafka (the stand-in's outbox) and serves it to the next sync."""

from __future__ import annotations

import os
from collections.abc import Iterable

import dagster as dg
import httpx

from rossmann_local.domain.catalogue_changes import CatalogueChange, CategoryNameChange, DescriptionChange, PriceChange
from rossmann_local.resources import resolved
from rossmann_local.settings import ADMIN_TOKEN_FILE, DEFAULT_SYNC_API_URL, SYNC_API_ADMIN_TOKEN, SYNC_API_URL, data_dir


class CatalogueAdminError(dg.Failure):
    """The Sync API refused a change: its status and answer, never the token."""


class CatalogueAdmin(dg.ConfigurableResource):
    """``base_url`` from ``ROSSMANN_SYNC_API_URL``. The admin token is read when a change is entered
    (never kept in the resource's config, which the UI shows): ``admin_token`` if given, else
    ``ROSSMANN_SYNC_API_ADMIN_TOKEN``, else the one the local stack keeps in the data dir."""

    base_url: str = DEFAULT_SYNC_API_URL
    admin_token: str | None = None
    timeout_seconds: float = 10.0

    def enter(self, changes: Iterable[CatalogueChange]) -> int:
        """Each change in the Sync API, in order; returns how many. The first refusal stops, naming it."""
        base, token = str(resolved(self.base_url)).rstrip("/"), resolved(self.admin_token) or _admin_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        count = 0
        with httpx.Client(base_url=base, timeout=self.timeout_seconds, headers=headers) as client:
            for change in changes:
                path, body = _request(change)
                try:
                    answer = client.post(path, json={**body, "effective_at_utc": change.at.isoformat()})
                except httpx.HTTPError as exc:
                    raise CatalogueAdminError(f"the Sync API at {base} did not take {path}: {exc}") from None
                if answer.status_code != 200:
                    hint = f"; check {SYNC_API_ADMIN_TOKEN}" if answer.status_code == 401 else ""
                    raise CatalogueAdminError(f"the Sync API at {base} refused {path} with {answer.status_code}: "
                                              f"{answer.text[:300]}{hint}")
                count += 1
        return count


def _request(change: CatalogueChange) -> tuple[str, dict[str, object]]:
    if isinstance(change, PriceChange):
        return (f"/admin/products/{change.product_id}/prices/{change.city}",
                {"price": float(change.price), "discount": float(change.discount)})
    if isinstance(change, DescriptionChange):
        return f"/admin/products/{change.product_id}", {"description": change.description}
    if isinstance(change, CategoryNameChange):
        return f"/admin/categories/{change.category_id}", {"name": change.name}
    raise TypeError(f"not a catalogue change: {change!r}")


def _admin_token() -> str | None:
    if token := os.environ.get(SYNC_API_ADMIN_TOKEN):
        return token
    kept = data_dir() / ADMIN_TOKEN_FILE
    return kept.read_text().strip() if kept.exists() else None


def catalogue_admin_from_env() -> CatalogueAdmin:
    url = dg.EnvVar(SYNC_API_URL) if os.environ.get(SYNC_API_URL) else DEFAULT_SYNC_API_URL
    return CatalogueAdmin(base_url=url)
