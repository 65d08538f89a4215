"""The Sync API of the general OLTP, as docs/contracts.md specifies it (all GET, JSON, same error codes)."""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
)

from rossmann_local.domain.catalogue import (
    MAX_PRICE,
    STORABLE_TEXT,
    CategoryRecord,
    Description,
    EmployeeIdentity,
    Name,
    ProductRecord,
    ShopIdentity,
    storable_text,
)
from rossmann_local.settings import SYNC_API_ADMIN_TOKEN
from rossmann_local.sync_api.store import (
    CatalogueStore,
    InvalidChange,
    UnknownEntity,
    WrongPassword,
    WrongShop,
)

log = logging.getLogger("rossmann_local.sync_api")

MAX_BODY_BYTES = 64 * 1024  # an admin edit is a few hundred bytes
# Failed password checks per client address and account (a shop, an e-mail, a terminal), then 429 until
# the minute has passed; across the accounts of one address (a spray) ten times as many.
FAILED_LOGINS_PER_MINUTE = 10
FAILED_LOGINS_PER_ADDRESS_PER_MINUTE = 10 * FAILED_LOGINS_PER_MINUTE


def _utc(value: datetime) -> datetime:
    """The time in UTC; a time that has no UTC equivalent (0001-01-01T00:00:00+23:59) is refused."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("time out of range once converted to UTC") from None


def _written_time(value: object) -> object:
    """A time is ISO-8601 text (a date, then the time), as the contract says: a number, or text of
    one, is not taken as seconds since 1970."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.match(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", value):
        raise ValueError("expected an ISO-8601 time, e.g. 2026-06-01T07:00:00Z")
    return value


SyncTime = Annotated[datetime, BeforeValidator(_written_time), AfterValidator(_utc),
                     Query(description="ISO-8601 UTC, e.g. 0001-01-01T00:00:00Z for a first sync")]
HISTORY = "history"


def _written_time_or_history(value: object) -> object:
    return value if value == HISTORY else _written_time(value)


AsOf = Annotated[datetime | Literal["history"] | None, BeforeValidator(_written_time_or_history),
                 AfterValidator(lambda v: _utc(v) if isinstance(v, datetime) else v), Query(
    description="Which versions: those in effect at this ISO-8601 time or before it; `history` for every "
                "version, those taking effect later included (a shop that keeps the catalogue's history). "
                "Without it: as of now on the world's clock (live mode's clock, else the latest shift start a "
                "shop synced at), so a client that keeps the last row it receives per key has the catalogue "
                "in effect now.")]
SyncedAt = Annotated[datetime | None, BeforeValidator(_written_time), AfterValidator(lambda v: v and _utc(v)), Query(
    description="The moment of this sync on the world's clock (a shop's shift start, ISO-8601): the stand-in's "
                "clock moves there (never back).")]
DbId = Annotated[int, Path(ge=1, le=2**31 - 1)]
QueryId = Annotated[int, Query(ge=1, le=2**31 - 1)]
Secret = Annotated[str, Query(max_length=256, json_schema_extra=STORABLE_TEXT), AfterValidator(storable_text)]
CityName = Annotated[str, Path(min_length=1, max_length=255, json_schema_extra=STORABLE_TEXT),
                     AfterValidator(storable_text)]


AdminCredentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, scheme_name="AdminToken",
                       description=f"The stand-in's admin token ({SYNC_API_ADMIN_TOKEN})"))]


def _written_number(value: object) -> object:
    """An amount in a body is a JSON number, as the contract says (not text, not true/false)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("expected a number")
    return value


def _amount(most: Decimal, places: int) -> Any:
    """A price or discount in an admin's edit: a number from 0 to ``most`` with at most ``places`` decimals."""
    step = Decimal(1).scaleb(-places)
    schema = {"type": "number", "minimum": 0, "maximum": float(most), "multipleOf": float(step)}
    return Annotated[Decimal, Field(ge=0, le=most, decimal_places=places), BeforeValidator(_written_number),
                     WithJsonSchema(schema)]


EditedPrice = _amount(MAX_PRICE, 2)
EditedDiscount = _amount(Decimal(1), 4)


class Edit(BaseModel):
    # As the contract says: no unknown field (and, below, 0 is not false).
    model_config = ConfigDict(extra="forbid")

    # When the change takes effect, in simulated time (e.g. 2026-06-01T13:00:00Z for an afternoon
    # promotion of that day); unset, now on the wall clock. Not before the world's start nor after its
    # end (beyond the clock skew).
    effective_at_utc: Annotated[AwareDatetime, BeforeValidator(_written_time), AfterValidator(_utc)] | None = None


class CategoryEdit(Edit):
    """An admin's edit of a category (the body of ``POST /admin/categories/{id}``); unset fields stay."""

    name: Name | None = None
    description: Description = None
    is_deleted: StrictBool | None = None


class ProductEdit(CategoryEdit):
    """An admin's edit of a product's name, description or deletion."""


class PriceEdit(Edit):
    price: EditedPrice
    discount: EditedDiscount = Decimal("0")


class ChangeApplied(BaseModel):
    updated_at_utc: datetime


class Refusal(BaseModel):
    """The body of every refusal but a request's own validation (400, 401, 403, 404, 409, 413, 429,
    500)."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str | None = None


class InvalidRequest(BaseModel):
    """A 422 for a request that does not validate: each field and what is wrong, never the input."""

    detail: list[FieldError] | str


REFUSED = {413: {"model": Refusal, "description": "Request body too large"},
           500: {"model": Refusal, "description": "Internal error (no details)"},
           422: {"model": InvalidRequest, "description": "The request does not validate"}}
PASSWORD_CHECKED = {401: {"model": Refusal, "description": "Wrong or unknown credentials"},
                    429: {"model": Refusal, "description": "Too many failed password checks for this account from this "
                                                          "client, or from this client over all accounts"}}
SHOP_SCOPED = {404: {"model": Refusal, "description": "No such shop, terminal or product"}}
ADMIN = {400: {"model": Refusal, "description": "The body is not JSON"},
         401: {"model": Refusal, "description": "Admin token missing or wrong"},
         404: {"model": Refusal, "description": "No such category, product or city"},
         409: {"model": Refusal, "description": "The change is dated before the world's start or after its end"}}


class FailedLogins:
    """Password checks in the last minute that did not succeed, per client address and account, and per
    address over all accounts: past either bound, 429. Per account, so shops behind one address (a
    shared NAT) are not locked out by another's wrong passwords. A check counts from its start (so
    concurrent guesses cannot slip past the bound together) and is forgotten if the password was right."""

    def __init__(self, limit: int = FAILED_LOGINS_PER_MINUTE,
                 address_limit: int = FAILED_LOGINS_PER_ADDRESS_PER_MINUTE, window: float = 60.0) -> None:
        self.limits = {True: limit, False: address_limit}  # by: is the key an account's?
        self.window = window
        self._attempts: dict[tuple[str, str | None], deque[float]] = {}
        self._lock = threading.Lock()

    def begin(self, client: str, account: str) -> float:
        keys = [(client, account), (client, None)]
        with self._lock:
            now = time.monotonic()  # bookkeeping, wall clock: a rate of attempts on the real network
            for key in keys:
                attempts = self._attempts.setdefault(key, deque())
                while attempts and attempts[0] < now - self.window:
                    attempts.popleft()
                if len(attempts) >= self.limits[key[1] is not None]:
                    raise HTTPException(429, "too many failed password checks; try again in a minute",
                                        headers={"Retry-After": str(int(self.window))})
            for key in keys:
                self._attempts[key].append(now)
            if len(self._attempts) > 10_000:  # bounded memory under a spray from many addresses
                self._attempts = {k: v for k, v in self._attempts.items() if v}
            return now

    def succeeded(self, client: str, account: str, started: float) -> None:
        with self._lock:
            for key in ((client, account), (client, None)):
                with contextlib.suppress(KeyError, ValueError):
                    self._attempts[key].remove(started)


class BodyLimit:
    """Refuse a request body over ``MAX_BODY_BYTES`` (413) before it is read into memory, whether or
    not it declares its length."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)(
                scope, receive, send)
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


def create_app(store: CatalogueStore, admin_token: str | None = None) -> FastAPI:
    """The Sync API over ``store``. The admin endpoints answer only a request carrying
    ``Authorization: Bearer <admin_token>``; without a token they are closed."""
    app = FastAPI(title="Rossmann general OLTP: Sync API (stand-in)", version="1.0", responses=REFUSED)
    app.add_middleware(BodyLimit)
    logins = FailedLogins()

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def require_admin(credentials: AdminCredentials) -> None:
        if not admin_token:
            raise HTTPException(401, f"the admin endpoints are closed: no {SYNC_API_ADMIN_TOKEN} is configured",
                                headers={"WWW-Authenticate": "Bearer"})
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), admin_token.encode()):
            raise HTTPException(401, "admin token missing or wrong", headers={"WWW-Authenticate": "Bearer"})

    def password_checked(request: Request, account: str, check: Callable[[], Any]) -> Any:
        client = client_of(request)
        started = logins.begin(client, account)
        answer = check()
        logins.succeeded(client, account, started)
        return answer

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

    @app.exception_handler(InvalidChange)
    async def invalid(_request: Request, exc: InvalidChange) -> JSONResponse:
        """Well-formed, but the world cannot take it (dated after its end): a conflict, not a bad request."""
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def refused(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each field and what is wrong, never echoing the input (it may be a password,
        or text that cannot even be encoded, such as a lone surrogate)."""
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")).encode("utf-8", "replace").decode(),
                   "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        """An unexpected error is logged here with its stack; the client gets no internals."""
        log.error("unexpected error", exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/shops/authorize", responses=PASSWORD_CHECKED | SHOP_SCOPED)
    def authorize_shop(request: Request, shop_id: QueryId, password: Secret) -> ShopIdentity:
        return password_checked(request, f"shop {shop_id}", lambda: store.authorize_shop(shop_id, password))

    @app.get("/employees/authorize", responses=PASSWORD_CHECKED)
    def authorize_employee(request: Request, email: Secret, password: Secret) -> EmployeeIdentity:
        """An unknown e-mail and a wrong password answer the same 401, after the same work."""
        return password_checked(request, f"employee {email.casefold()}",
                                lambda: store.authorize_employee(email, password))

    @app.get("/terminals/get_available", responses=SHOP_SCOPED)
    def available_terminals(shop_id: QueryId) -> list[int]:
        return store.terminals_of(shop_id)

    @app.get("/terminals/authorize", responses=PASSWORD_CHECKED | SHOP_SCOPED
             | {403: {"model": Refusal, "description": "The terminal is not this shop's"}})
    def authorize_terminal(request: Request, shop_id: QueryId, terminal_id: QueryId, password: Secret) -> bool:
        return password_checked(request, f"terminal {shop_id}/{terminal_id}",
                                lambda: store.authorize_terminal(shop_id, terminal_id, password))

    def refuse_while_down() -> None:
        """A scenario's outage (``CatalogueStore.go_down``): the sync endpoints answer 503."""
        if store.down():
            raise HTTPException(503, "the Sync API is down (a scenario's outage); try again later")

    def versions_up_to(as_of: datetime | str | None, at: datetime | None) -> datetime | None:
        """The latest effective time to answer with (None: every version), the clock moved to ``at``."""
        if at is not None:
            store.reached(at)
        if as_of == HISTORY:
            return None
        return as_of if isinstance(as_of, datetime) else store.world_now()

    @app.get("/categories/sync", dependencies=[Depends(refuse_while_down)])
    def categories_sync(sync_utc_time: SyncTime, as_of: AsOf = None, at: SyncedAt = None) -> list[CategoryRecord]:
        """Category versions taking effect after the time, oldest first (as of ``as_of``)."""
        return store.categories_changed_since(sync_utc_time, versions_up_to(as_of, at))

    @app.get("/products/sync", responses=SHOP_SCOPED, dependencies=[Depends(refuse_while_down)])
    def products_sync(shop_id: QueryId, sync_utc_time: SyncTime, as_of: AsOf = None,
                      at: SyncedAt = None) -> list[ProductRecord]:
        """Product versions taking effect after the time, with the price and discount of the shop's city,
        oldest first (as of ``as_of``)."""
        return store.products_changed_since(shop_id, sync_utc_time, versions_up_to(as_of, at))
    # The web/admin side of the chain, for demos and tests: each change is committed with its Kafka
    # message in the outbox (published by the relay when Kafka is configured).
    admin = [Depends(require_admin)]

    @app.post("/admin/categories/{category_id}", dependencies=admin, responses=ADMIN)
    def change_category(category_id: DbId, change: CategoryEdit) -> ChangeApplied:
        record = store.update_category(category_id, **change.model_dump(exclude={"effective_at_utc"}),
                                       at=change.effective_at_utc)
        return ChangeApplied(updated_at_utc=record.updated_at_utc)

    @app.post("/admin/products/{product_id}", dependencies=admin, responses=ADMIN)
    def change_product(product_id: DbId, change: ProductEdit) -> ChangeApplied:
        return ChangeApplied(updated_at_utc=store.update_product(
            product_id, **change.model_dump(exclude={"effective_at_utc"}), at=change.effective_at_utc))

    @app.post("/admin/products/{product_id}/prices/{city}", dependencies=admin, responses=ADMIN)
    def change_price(product_id: DbId, city: CityName, change: PriceEdit) -> ChangeApplied:
        return ChangeApplied(updated_at_utc=store.set_price(product_id, city, change.price, change.discount,
                                                            at=change.effective_at_utc))

    return app
