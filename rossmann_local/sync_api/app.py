"""The Sync API of the general OLTP, as docs/contracts.md specifies it (all GET, JSON, same error codes)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from rossmann_local.domain.catalogue import (
    CategoryRecord,
    Discount,
    EmployeeIdentity,
    Price,
    ProductRecord,
    ShopIdentity,
)
from rossmann_local.sync_api.store import CatalogueStore, UnknownEntity, WrongPassword, WrongShop

log = logging.getLogger("rossmann_local.sync_api")

SyncTime = Annotated[datetime, Query(description="ISO-8601 UTC, e.g. 0001-01-01T00:00:00Z for a first sync")]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Edit(BaseModel):
    # When the change takes effect, in simulated time (e.g. 2026-06-01T13:00:00Z for an afternoon
    # promotion of that day); unset, now on the wall clock.
    effective_at_utc: AwareDatetime | None = None


class CategoryEdit(Edit):
    """An admin's edit of a category (the body of ``POST /admin/categories/{id}``); unset fields stay."""

    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=2048)
    is_deleted: bool | None = None


class ProductEdit(CategoryEdit):
    """An admin's edit of a product's name, description or deletion."""


class PriceEdit(Edit):
    price: Price
    discount: Discount = Decimal("0")


class ChangeApplied(BaseModel):
    updated_at_utc: datetime


def create_app(store: CatalogueStore) -> FastAPI:
    app = FastAPI(title="Rossmann general OLTP: Sync API (stand-in)", version="1.0")

    @app.middleware("http")
    async def log_without_query(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Access log of method, path and status only: query strings carry passwords upstream."""
        response = await call_next(request)
        log.info("%s %s %s", request.method, request.url.path, response.status_code)
        return response

    @app.exception_handler(UnknownEntity)
    async def not_found(_request: Request, exc: UnknownEntity) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(WrongPassword)
    async def unauthorized(_request: Request, exc: WrongPassword) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=401)

    @app.exception_handler(WrongShop)
    async def forbidden(_request: Request, exc: WrongShop) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/shops/authorize")
    def authorize_shop(shop_id: int, password: str) -> ShopIdentity:
        return store.authorize_shop(shop_id, password)

    @app.get("/employees/authorize")
    def authorize_employee(email: str, password: str) -> EmployeeIdentity:
        return store.authorize_employee(email, password)

    @app.get("/terminals/get_available")
    def available_terminals(shop_id: int) -> list[int]:
        return store.terminals_of(shop_id)

    @app.get("/terminals/authorize")
    def authorize_terminal(shop_id: int, terminal_id: int, password: str) -> bool:
        return store.authorize_terminal(shop_id, terminal_id, password)

    @app.get("/categories/sync")
    def categories_sync(sync_utc_time: SyncTime) -> list[CategoryRecord]:
        return store.categories_changed_since(_utc(sync_utc_time))

    @app.get("/products/sync")
    def products_sync(shop_id: int, sync_utc_time: SyncTime) -> list[ProductRecord]:
        """Products changed after the time, with the price and discount of the shop's city."""
        return store.products_changed_since(shop_id, _utc(sync_utc_time))
    # The web/admin side of the chain, for demos and tests: each change is committed with its Kafka
    # message in the outbox (published by the relay when Kafka is configured).
    @app.post("/admin/categories/{category_id}")
    def change_category(category_id: int, change: CategoryEdit) -> ChangeApplied:
        record = store.update_category(category_id, **change.model_dump(exclude={"effective_at_utc"}),
                                       at=change.effective_at_utc)
        return ChangeApplied(updated_at_utc=record.updated_at_utc)

    @app.post("/admin/products/{product_id}")
    def change_product(product_id: int, change: ProductEdit) -> ChangeApplied:
        return ChangeApplied(updated_at_utc=store.update_product(
            product_id, **change.model_dump(exclude={"effective_at_utc"}), at=change.effective_at_utc))

    @app.post("/admin/products/{product_id}/prices/{city}")
    def change_price(product_id: int, city: str, change: PriceEdit) -> ChangeApplied:
        return ChangeApplied(updated_at_utc=store.set_price(product_id, city, change.price, change.discount,
                                                            at=change.effective_at_utc))

    return app
