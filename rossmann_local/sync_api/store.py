"""The stand-in general OLTP's own store: catalogue with per-city prices, shops, terminals, staff.

Every change goes through a method here and gets a server-side ``updated_at_utc`` that is strictly
newer than any before it (inserts too), so a shop's incremental sync never misses a change. In the
same transaction it writes the change's Kafka message into an outbox, so a committed change is
never lost to the topics (``outbox.py`` publishes it). Passwords are kept as salted PBKDF2 hashes
and never leave the store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar, TypeVar

from sqlalchemy import (
    Boolean,
    Engine,
    ForeignKey,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rossmann_local.domain.catalogue import CategoryRecord, EmployeeIdentity, ProductRecord, ShopIdentity
from rossmann_local.domain.catalogue_changes import category_key, message_key, product_key
from rossmann_local.domain.messages import ProductDescriptionMessage, ProductMessage
from rossmann_local.domain.topics import CATEGORY_TOPIC, PRODUCT_DESCRIPTION_TOPIC, PRODUCT_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.sqltypes import FractionColumn, MoneyColumn, UtcDateTime

ONE_MICROSECOND = timedelta(microseconds=1)


class StoreBase(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: UtcDateTime, Decimal: MoneyColumn}


class CityRow(StoreBase):
    __tablename__ = "cities"
    city_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    country: Mapped[str] = mapped_column(String(255))


class ShopRow(StoreBase):
    __tablename__ = "shops"
    shop_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    city_id: Mapped[int] = mapped_column(ForeignKey("cities.city_id"))
    password_hash: Mapped[str | None] = mapped_column(String(200))


class TerminalRow(StoreBase):
    __tablename__ = "terminals"
    terminal_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.shop_id"), index=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))


class EmployeeRow(StoreBase):
    __tablename__ = "employees"
    employee_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    first_name: Mapped[str] = mapped_column(String(255))
    last_name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(255), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(200))


class CategoryRow(StoreBase):
    __tablename__ = "categories"
    category_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at_utc: Mapped[datetime] = mapped_column(index=True)


class ProductRow(StoreBase):
    __tablename__ = "products"
    product_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.category_id"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048))
    barcode: Mapped[str] = mapped_column(String(12), unique=True)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at_utc: Mapped[datetime] = mapped_column(index=True)


class ProductPriceRow(StoreBase):
    """Price and discount of a product in one city: each city changes on its own clock."""

    __tablename__ = "product_prices"
    product_id: Mapped[int] = mapped_column(ForeignKey("products.product_id"), primary_key=True)
    city_id: Mapped[int] = mapped_column(ForeignKey("cities.city_id"), primary_key=True)
    price: Mapped[Decimal]
    discount: Mapped[Decimal] = mapped_column(FractionColumn)
    updated_at_utc: Mapped[datetime] = mapped_column(index=True)


_Versioned = TypeVar("_Versioned", CategoryRow, ProductRow, ProductPriceRow)


def catalogue_epoch(world: World) -> datetime:
    """When the seeded catalogue takes effect: midnight of the world's first day, in its zone."""
    return world.first_moment


class CategoryHistoryRow(StoreBase):
    """Every version of a category from the (simulated) time it takes effect: what the sync serves."""

    __tablename__ = "category_history"
    category_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    updated_at_utc: Mapped[datetime] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class ProductHistoryRow(StoreBase):
    __tablename__ = "product_history"
    product_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    updated_at_utc: Mapped[datetime] = mapped_column(primary_key=True)
    category_id: Mapped[int]
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048))
    barcode: Mapped[str] = mapped_column(String(12))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class PriceHistoryRow(StoreBase):
    __tablename__ = "product_price_history"
    product_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    city_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    updated_at_utc: Mapped[datetime] = mapped_column(primary_key=True)
    price: Mapped[Decimal]
    discount: Mapped[Decimal] = mapped_column(FractionColumn)


HISTORY: dict[type, type] = {CategoryRow: CategoryHistoryRow, ProductRow: ProductHistoryRow,
                             ProductPriceRow: PriceHistoryRow}


def _history_of(row: CategoryRow | ProductRow | ProductPriceRow) -> StoreBase:
    """The version a (current or older) row states, for the history."""
    history = HISTORY[type(row)]
    return history(**{c.key: getattr(row, c.key) for c in history.__table__.columns})


class OutboxRow(StoreBase):
    """A catalogue change's message, written with the change, published after it (in id order)."""

    __tablename__ = "outbox"
    message_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text)  # "" for a tombstone (a Kafka record with a key and no value)
    created_at_utc: Mapped[datetime]
    published_at_utc: Mapped[datetime | None] = mapped_column(index=True)
    # The record's Kafka key (``domain.catalogue_changes.message_key``): the compacted topics keep the
    # newest record per key. None in rows a stand-in wrote before keys were sent.
    message_key: Mapped[str | None] = mapped_column(String(255))

    @property
    def value(self) -> bytes | None:
        """What goes to Kafka: the JSON, or nothing for a tombstone."""
        return self.payload.encode() if self.payload else None


class OutboxPlacement(StoreBase):
    """Where the broker put a published outbox message, and when it was read back there: a message
    the broker lost after confirming goes back to the outbox and is published again."""

    __tablename__ = "outbox_placements"
    message_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    topic_partition: Mapped[int]
    topic_offset: Mapped[int]
    confirmed_at_utc: Mapped[datetime]
    verified_at_utc: Mapped[datetime | None] = mapped_column(index=True)


class WorldClockRow(StoreBase):
    """The latest moment of the world a shop synced at (one row): the stand-in's "now" on the world's
    clock, for a client that asks for the catalogue without saying as of when."""

    __tablename__ = "world_clock"
    clock_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    now_utc: Mapped[datetime]


class UnknownEntity(LookupError):
    """A shop, terminal, employee, product, category or city the store does not have (HTTP 404)."""


class WrongPassword(PermissionError):
    """Authentication failed (HTTP 401)."""


class WrongShop(PermissionError):
    """The terminal belongs to another shop (HTTP 403)."""


class InvalidChange(ValueError):
    """A change the catalogue refuses, e.g. dated after the world's end (HTTP 409)."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)
    return f"{salt.hex()}${digest.hex()}"


# Checked against when the user is unknown, so an unknown user costs the same PBKDF2 as a wrong password.
_NO_USER_HASH = hash_password("no user has this password", bytes(16))


def password_matches(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches; always one PBKDF2 run (about 30 ms), even with no stored hash."""
    salt_hex, _ = (stored or _NO_USER_HASH).split("$", 1)
    matches = hmac.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), stored or _NO_USER_HASH)
    return matches and stored is not None


_Version = TypeVar("_Version", ProductHistoryRow, PriceHistoryRow)


def _by_key(rows: Iterable[_Version]) -> dict[int, list[_Version]]:
    versions: dict[int, list[_Version]] = {}
    for row in rows:
        versions.setdefault(row.product_id, []).append(row)
    return versions


def _in_effect(versions: list[_Version], moment: datetime) -> _Version | None:
    """The version (of a time-ordered list) in effect at ``moment``."""
    current = None
    for version in versions:
        if version.updated_at_utc > moment:
            break
        current = version
    return current


class CatalogueStore:
    """The stand-in's data, behind methods that keep ``updated_at_utc`` honest."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False})
            # Writers serialise from their first statement, so change times are handed out in commit order.
            event.listen(self.engine, "connect", lambda dbapi, _rec: setattr(dbapi, "isolation_level", None))
            event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        else:
            self.engine = create_engine(url)
        StoreBase.metadata.create_all(self.engine)
        with self.engine.begin() as conn:  # a store made before the outbox kept keys gets the column
            if "message_key" not in {c["name"] for c in inspect(conn).get_columns("outbox")}:
                conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN message_key VARCHAR(255)")
        self.world: World | None = None  # set by ``seed``: its end bounds the changes' times
        # Live mode's simulated clock: a change made without ``at`` takes effect at its time.
        self.clock: Callable[[], datetime] | None = None
        # A scenario's outage: how many sync requests to come are refused (the stand-in is "down").
        self._syncs_to_refuse = 0
        self.syncs_refused = 0  # by outages, since the store was opened
        self._outage_lock = threading.Lock()

    def go_down(self, sync_requests: int) -> None:
        """Refuse the next ``sync_requests`` sync requests, as a Sync API that is down would (503)."""
        with self._outage_lock:
            self._syncs_to_refuse = sync_requests

    def down(self) -> bool:
        """Whether this sync request is refused (counting it as one of the outage's)."""
        with self._outage_lock:
            if self._syncs_to_refuse <= 0:
                return False
            self._syncs_to_refuse -= 1
            self.syncs_refused += 1
            return True

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _next_change_time(self, session: Session) -> datetime:
        """Now, or just after the newest change recorded so far if the clock is behind it: the time a
        change made by hand without a simulated time (``at``) takes effect, i.e. the live mapping of
        the simulated clock onto the wall clock; every change the chain's demo makes passes ``at``. In
        live mode (``clock`` set) it is the live clock's simulated time."""
        if self.clock is not None:
            return self.clock().astimezone(UTC)
        newest = [
            session.scalar(select(func.max(table.updated_at_utc)))
            for table in (CategoryRow, ProductRow, ProductPriceRow)
        ]
        now = datetime.now(UTC)
        latest = max((t for t in newest if t is not None), default=None)
        return now if latest is None or now > latest else latest + ONE_MICROSECOND

    # --- seeding --------------------------------------------------------------------------------

    def seed(self, world: World, password: str | None = None) -> bool:
        """Load the world once (an already seeded store is left as it is). Returns whether it seeded.
        The world also bounds the time a change may take effect (not after its end, plus skew).

        ``password`` (from ``ROSSMANN_SYNC_API_PASSWORD``) is set for every shop, terminal and
        employee; without one nobody can authorize, which the sync endpoints do not need."""
        self.world = world
        with self._session() as s:
            if s.scalar(select(func.count()).select_from(CityRow)):
                return False
            pw = hash_password(password) if password else None
            city_ids = {c.name: i for i, c in enumerate(world.cities, start=1)}
            s.add_all(CityRow(city_id=city_ids[c.name], name=c.name, country=c.country) for c in world.cities)
            s.add_all(ShopRow(shop_id=shop.shop_id, city_id=city_ids[shop.city], password_hash=pw)
                      for shop in world.shops)
            s.add_all(TerminalRow(terminal_id=t, shop_id=shop.shop_id, password_hash=pw)
                      for shop in world.shops for t in shop.terminal_ids)
            s.add_all(EmployeeRow(employee_id=e.employee_id, first_name=e.first_name, last_name=e.last_name,
                                  email=e.email, role=e.role, password_hash=pw) for e in world.employees)
            s.flush()
            # The seeded catalogue is in effect from the world's first day (simulated time): every
            # shift sells at it until a change takes effect.
            now = catalogue_epoch(world)
            s.add_all(CategoryRow(category_id=c.category_id, name=c.name, description=c.description,
                                  updated_at_utc=now) for c in world.categories)
            s.add_all(ProductRow(product_id=p.product_id, category_id=p.category_id, name=p.name,
                                 description=p.description, barcode=p.barcode, updated_at_utc=now)
                      for p in world.products)
            s.flush()
            s.add_all(ProductPriceRow(product_id=p.product_id, city_id=city_ids[city], price=cp.price,
                                      discount=cp.discount, updated_at_utc=now)
                      for p in world.products for city, cp in p.prices.items())
            s.flush()
            for model in HISTORY:
                s.add_all(_history_of(row) for row in s.scalars(select(model)))
        return True

    # --- reads ----------------------------------------------------------------------------------

    def _shop(self, s: Session, shop_id: int) -> ShopRow:
        shop = s.get(ShopRow, shop_id)
        if shop is None:
            raise UnknownEntity(f"shop {shop_id} not found")
        return shop

    # The password checks read what they need in a short read-only session and run PBKDF2 after it,
    # outside any database lock (a check inside BEGIN IMMEDIATE once made concurrent logins time out).

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def authorize_shop(self, shop_id: int, password: str) -> ShopIdentity:
        with self._reading() as s:
            shop = self._shop(s, shop_id)
            city = s.get_one(CityRow, shop.city_id)
        if not password_matches(password, shop.password_hash):
            raise WrongPassword("wrong shop password")
        return ShopIdentity(shop_id=shop.shop_id, country_name=city.country, city_name=city.name)

    def authorize_employee(self, email: str, password: str) -> EmployeeIdentity:
        """An unknown e-mail and a wrong password fail alike (same answer, same PBKDF2 work), so the
        endpoint cannot be used to list the chain's users."""
        with self._reading() as s:
            employee = s.scalar(select(EmployeeRow).where(EmployeeRow.email == email.lower()))
        if not password_matches(password, employee.password_hash if employee else None) or employee is None:
            raise WrongPassword("wrong e-mail or password")
        return EmployeeIdentity(employee_id=employee.employee_id, first_name=employee.first_name,
                                last_name=employee.last_name, role=employee.role)  # type: ignore[arg-type]

    def terminals_of(self, shop_id: int) -> list[int]:
        with self._session() as s:
            self._shop(s, shop_id)
            return list(s.scalars(select(TerminalRow.terminal_id).where(TerminalRow.shop_id == shop_id)
                                  .order_by(TerminalRow.terminal_id)))

    def authorize_terminal(self, shop_id: int, terminal_id: int, password: str) -> bool:
        with self._reading() as s:
            self._shop(s, shop_id)
            terminal = s.get(TerminalRow, terminal_id)
        if terminal is None:
            raise UnknownEntity(f"terminal {terminal_id} not found")
        if terminal.shop_id != shop_id:
            raise WrongShop(f"terminal {terminal_id} belongs to another shop")
        if not password_matches(password, terminal.password_hash):
            raise WrongPassword("wrong terminal password")
        return True

    # --- the world's clock, as the stand-in knows it -----------------------------------------------

    def world_now(self) -> datetime | None:
        """Now on the world's clock: live mode's clock when it runs, else the latest moment a shop
        synced at (``reached``), else the seeded catalogue's epoch (nothing else is in effect yet)."""
        if self.clock is not None:
            return self.clock().astimezone(UTC)
        with self._session() as s:
            row = s.get(WorldClockRow, 1)
            if row is not None:
                return row.now_utc
        return catalogue_epoch(self.world) if self.world is not None else None

    def reached(self, at: datetime) -> None:
        """A shop synced at ``at`` (its shift's start): the world's clock is there, or later."""
        with self._session() as s:
            row = s.get(WorldClockRow, 1)
            if row is None:
                s.add(WorldClockRow(clock_id=1, now_utc=at))
            elif row.now_utc < at:
                row.now_utc = at

    # --- the sync --------------------------------------------------------------------------------

    def categories_changed_since(self, since: datetime, as_of: datetime | None = None) -> list[CategoryRecord]:
        """Every category version that takes effect after ``since`` (and at ``as_of`` or before, when
        given), oldest first."""
        with self._session() as s:
            query = select(CategoryHistoryRow).where(CategoryHistoryRow.updated_at_utc > since)
            if as_of is not None:
                query = query.where(CategoryHistoryRow.updated_at_utc <= as_of)
            rows = s.scalars(query.order_by(CategoryHistoryRow.updated_at_utc, CategoryHistoryRow.category_id))
            return [CategoryRecord.model_validate(r, from_attributes=True) for r in rows]

    def products_changed_since(self, shop_id: int, since: datetime,
                               as_of: datetime | None = None) -> list[ProductRecord]:
        """Every version of a product, with the price of the shop's city, that takes effect after
        ``since`` (its own fields or its price changed then) and at ``as_of`` or before (when given),
        oldest first: the shop's history, or what was in effect up to ``as_of``."""
        with self._session() as s:
            city_id = self._shop(s, shop_id).city_id
            products = _by_key(s.scalars(select(ProductHistoryRow).order_by(ProductHistoryRow.updated_at_utc)))
            prices = _by_key(s.scalars(select(PriceHistoryRow).where(PriceHistoryRow.city_id == city_id)
                                       .order_by(PriceHistoryRow.updated_at_utc)))
        records = []
        for product_id, versions in products.items():
            moments = sorted({v.updated_at_utc for v in (*versions, *prices.get(product_id, ()))
                              if since < v.updated_at_utc and (as_of is None or v.updated_at_utc <= as_of)})
            for moment in moments:
                product, price = _in_effect(versions, moment), _in_effect(prices.get(product_id, []), moment)
                if product is None or price is None:
                    continue
                records.append(ProductRecord(
                    product_id=product_id, name=product.name, description=product.description,
                    barcode=product.barcode, category_id=product.category_id, price=price.price,
                    discount=price.discount, is_deleted=product.is_deleted, updated_at_utc=moment))
        return sorted(records, key=lambda r: (r.updated_at_utc, r.product_id))

    # --- changes (the web/admin side of the chain) ------------------------------------------------

    @staticmethod
    def _publish(s: Session, topic: str, payload: str, at: datetime) -> None:
        s.add(OutboxRow(topic=topic, payload=payload, created_at_utc=at, message_key=message_key(topic, payload)))

    @staticmethod
    def _tombstone(s: Session, topic: str, key: str, at: datetime) -> None:
        """After a deletion's message (which carries ``is_deleted`` and its effective time), the key's
        tombstone: compaction then drops the key's records from the topic."""
        s.add(OutboxRow(topic=topic, payload="", created_at_utc=at, message_key=key))

    def unpublished(self, limit: int = 10_000) -> list[OutboxRow]:
        with self._session() as s:
            return list(s.scalars(select(OutboxRow).where(OutboxRow.published_at_utc.is_(None))
                                  .order_by(OutboxRow.message_id).limit(limit)))

    def messages_effective_between(self, first: datetime, last: datetime) -> list[tuple[str, str, datetime]]:
        """(topic, payload, effective time in UTC) of every change's message in effect from ``first``
        to ``last``: what a scenario delivers again or spoils."""
        with self._session() as s:
            rows = s.execute(select(OutboxRow.topic, OutboxRow.payload, OutboxRow.created_at_utc)
                             .where(OutboxRow.created_at_utc.between(first.astimezone(UTC), last.astimezone(UTC)),
                                    OutboxRow.payload != "")  # tombstones carry no change to deliver again
                             .order_by(OutboxRow.message_id))
            return [(topic, payload, at.replace(tzinfo=UTC) if at.tzinfo is None else at)
                    for topic, payload, at in rows]

    def mark_published(self, message_ids: list[int], placed: dict[int, tuple[int, int]] | None = None) -> None:
        """Mark messages published, with where the broker put them (``placed``: id -> partition, offset)."""
        if message_ids:
            now = datetime.now(UTC)  # bookkeeping, wall clock: when the broker confirmed
            with self._session() as s:
                s.execute(update(OutboxRow).where(OutboxRow.message_id.in_(message_ids))
                          .values(published_at_utc=now))
                for message_id, (partition, offset) in (placed or {}).items():
                    s.merge(OutboxPlacement(message_id=message_id, topic_partition=partition, topic_offset=offset,
                                            confirmed_at_utc=now, verified_at_utc=None))

    def unverified_placements(self) -> list[tuple[int, str, str, int, int, datetime]]:
        """(message id, topic, payload, partition, offset, confirmed at) of every published message
        not yet read back where the broker put it."""
        with self._session() as s:
            rows = s.execute(select(OutboxRow.message_id, OutboxRow.topic, OutboxRow.payload,
                                    OutboxPlacement.topic_partition, OutboxPlacement.topic_offset,
                                    OutboxPlacement.confirmed_at_utc)
                             .join(OutboxPlacement, OutboxPlacement.message_id == OutboxRow.message_id)
                             .where(OutboxPlacement.verified_at_utc.is_(None)))
            return [tuple(r) for r in rows]  # type: ignore[misc]

    def settle_placements(self, kept: list[int], lost: list[int]) -> None:
        """Kept: verified. Lost: back to the outbox, to be published again."""
        with self._session() as s:
            if kept:
                s.execute(update(OutboxPlacement).where(OutboxPlacement.message_id.in_(kept))
                          .values(verified_at_utc=datetime.now(UTC)))  # bookkeeping, wall clock
            if lost:
                s.execute(delete(OutboxPlacement).where(OutboxPlacement.message_id.in_(lost)))
                s.execute(update(OutboxRow).where(OutboxRow.message_id.in_(lost)).values(published_at_utc=None))

    def _changed(self, s: Session, model: type[_Versioned], key: int, at: datetime | None,
                 **changes: object) -> tuple[_Versioned, datetime]:
        """The row with the given (non-None) changes, and the time they take effect: ``at`` (simulated
        time), or a fresh change time on the wall clock when none is given. The stored row is the
        newest version: a change that takes effect before it is published, not stored."""
        row = s.get(model, key)
        if row is None:
            raise UnknownEntity(f"{model.__tablename__.removesuffix('s')} {key} not found")
        effective = self._next_change_time(s) if at is None else at.astimezone(UTC)
        if self.world is not None and (reason := self.world.dated_outside(effective)):
            raise InvalidChange(f"effective_at_utc: {reason}")
        changed = row if effective >= row.updated_at_utc else model(**{
            c.key: getattr(row, c.key) for c in model.__table__.columns})  # type: ignore[arg-type]
        for attr, value in changes.items():
            if value is not None:
                setattr(changed, attr, value)
        changed.updated_at_utc = effective
        s.merge(_history_of(changed))  # the same change at the same time is one version
        return changed, effective

    def update_category(self, category_id: int, *, name: str | None = None, description: str | None = None,
                        is_deleted: bool | None = None, at: datetime | None = None) -> CategoryRecord:
        """Change a category, in effect from ``at`` (simulated time; default now on the wall clock)."""
        with self._session() as s:
            row, effective = self._changed(s, CategoryRow, category_id, at, name=name, description=description,
                                           is_deleted=is_deleted)
            record = CategoryRecord.model_validate(row, from_attributes=True)
            self._publish(s, CATEGORY_TOPIC, record.model_dump_json(), effective)
            if is_deleted:
                self._tombstone(s, CATEGORY_TOPIC, category_key(category_id), effective)
            return record

    def update_product(self, product_id: int, *, name: str | None = None, description: str | None = None,
                       is_deleted: bool | None = None, at: datetime | None = None) -> datetime:
        """Change a product's descriptive fields, in effect from ``at``; returns that time."""
        with self._session() as s:
            row, effective = self._changed(s, ProductRow, product_id, at, name=name, description=description,
                                           is_deleted=is_deleted)
            message = ProductDescriptionMessage.model_validate(row, from_attributes=True)
            self._publish(s, PRODUCT_DESCRIPTION_TOPIC, message.model_dump_json(), effective)
            if is_deleted:
                self._tombstone(s, PRODUCT_DESCRIPTION_TOPIC, product_key(product_id), effective)
                cities = s.scalars(select(CityRow.name)
                                   .join(ProductPriceRow, ProductPriceRow.city_id == CityRow.city_id)
                                   .where(ProductPriceRow.product_id == product_id).order_by(CityRow.name))
                for city in cities:
                    self._tombstone(s, PRODUCT_TOPIC, product_key(product_id, city), effective)
            return effective

    def set_price(self, product_id: int, city: str, price: Decimal, discount: Decimal,
                  at: datetime | None = None) -> datetime:
        """Change the product's price in one city, in effect from ``at``; returns that time."""
        with self._session() as s:
            city_id = s.scalar(select(CityRow.city_id).where(CityRow.name == city))
            if city_id is None or s.get(ProductPriceRow, (product_id, city_id)) is None:
                raise UnknownEntity(f"no price of product {product_id} in city {city!r}")
            _row, effective = self._changed(s, ProductPriceRow, (product_id, city_id), at,  # type: ignore[arg-type]
                                            price=price, discount=discount)
            # The product's fields in effect at the price's time (a description may be entered ahead
            # of it): the shops of the city record them as the product's version at that time, as
            # the Sync API answers them.
            versions = list(s.scalars(select(ProductHistoryRow).where(ProductHistoryRow.product_id == product_id)
                                      .order_by(ProductHistoryRow.updated_at_utc)))
            product = _in_effect(versions, effective) or s.get_one(ProductRow, product_id)
            message = ProductMessage(**ProductDescriptionMessage.model_validate(product, from_attributes=True)
                                     .model_dump(exclude={"updated_at_utc"}),
                                     price=price, discount=discount, city=city, updated_at_utc=effective)
            self._publish(s, PRODUCT_TOPIC, message.model_dump_json(), effective)
            return effective
