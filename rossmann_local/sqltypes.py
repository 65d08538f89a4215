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


# Digit pairs and triples by value: a time's text is put together from these rather than formatted.
_TWO_DIGITS = [f"{n:02}" for n in range(60)]
_THREE_DIGITS = [f"{n:03}" for n in range(1000)]
_DAY_TEXT: dict[int, str] = {}  # proleptic ordinal -> "YYYY-MM-DD"; a batch's times fall on a few days
_DAYS_KEPT = 4096


def _sqlite_text(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text (``YYYY-MM-DD HH:MM:SS.ffffff``) of the UTC time: the same
    characters for every datetime, at a third of ``isoformat``'s instructions (its C formats each
    number with a printf and the zone's offset too, about 13,000 instructions a time under callgrind;
    a history insert types a time per row)."""
    if value.tzinfo is not UTC:  # the domain holds times in UTC; any other zone goes the long way
        return _naive_utc(value).isoformat(" ", "microseconds")
    day = _DAY_TEXT.get(ordinal := value.toordinal())
    if day is None:
        if len(_DAY_TEXT) >= _DAYS_KEPT:  # a process that writes times over many years keeps a bounded cache
            _DAY_TEXT.clear()
        day = _DAY_TEXT[ordinal] = value.date().isoformat()
    micro = value.microsecond
    return (f"{day} {_TWO_DIGITS[value.hour]}:{_TWO_DIGITS[value.minute]}:{_TWO_DIGITS[value.second]}"
            f".{_THREE_DIGITS[micro // 1000]}{_THREE_DIGITS[micro % 1000]}")


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
