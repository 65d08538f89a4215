"""Column types shared by the shop databases and the Sync API stand-in's store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; naive UTC on disk on every backend."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else _naive_utc(value)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _naive_utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"naive datetime {value!r} given where UTC time is stored")
    naive = value.replace(tzinfo=None)
    return naive - offset if offset else naive


def _sqlite_text(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text (``YYYY-MM-DD HH:MM:SS.ffffff``) of the UTC time, made by
    ``isoformat`` in C: the same characters for every datetime, at a fraction of the cost."""
    if value.tzinfo is UTC:  # as the domain holds times: the text, less its "+00:00"
        return value.isoformat(" ", "microseconds")[:26]
    return _naive_utc(value).isoformat(" ", "microseconds")


# An instant with every field set (and a zone that is not UTC): the fast text must equal SQLAlchemy's.
_PROBE = datetime.fromisoformat("0987-06-05T04:03:02.000001+02:30")


def utc_bind_processor(dialect: Dialect) -> Callable[[datetime], Any]:
    """How a UtcDateTime value goes to ``dialect``'s driver, for a bulk insert that types values
    itself: on SQLite a faster route to SQLAlchemy's own text (checked against it on a probe, so a
    SQLAlchemy that stores another format gets its own processor back), else the column type's."""
    processor = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None  # a TypeDecorator always has one: its process_bind_param
    if dialect.name == "sqlite" and processor(_PROBE) == _sqlite_text(_PROBE):
        return _sqlite_text
    return processor


MoneyColumn = Numeric(12, 2, asdecimal=True)
FractionColumn = Numeric(5, 4, asdecimal=True)
