"""Where a run's wall time goes: a sampling profiler of the main thread, which runs it (not in CI).

Every few milliseconds a timer interrupts it and the time since the last sample is charged to
one part of the chain. The first frame (innermost first) that is Dagster's or the project's
decides whose work it is: Dagster's frames (its event log, run and step bookkeeping, on whatever
storage) are "Dagster bookkeeping"; the project's frames are charged to the library they were
inside (SQLAlchemy/sqlite3/psycopg: shop databases; clickhouse_connect/chDB: ClickHouse;
confluent_kafka: Kafka; httpx: the Sync API), else to the project's module (the domain is the
simulation). Sampling costs little and needs no change to the code measured.
"""

from __future__ import annotations

import signal
import time
from types import FrameType, TracebackType

DAGSTER = "Dagster bookkeeping (events, runs, steps)"
SIMULATION = "simulation (domain: sales, deliveries, stock messages)"
SHOP_DB = "shop databases (SQLAlchemy, SQLite/Postgres)"
CLICKHOUSE = "ClickHouse (reports, checks)"
KAFKA = "Kafka (stock messages, catalogue)"
SYNC_API = "Sync API (HTTP)"
OTHER = "rossmann_local, other Python"
CATEGORIES = (DAGSTER, SIMULATION, SHOP_DB, CLICKHOUSE, KAFKA, SYNC_API, OTHER)

LIBRARIES = (("sqlalchemy", SHOP_DB), ("sqlite3", SHOP_DB), ("psycopg", SHOP_DB), ("clickhouse_connect", CLICKHOUSE),
             ("chdb", CLICKHOUSE), ("confluent_kafka", KAFKA), ("httpx", SYNC_API), ("httpcore", SYNC_API))
MODULES = (("rossmann_local/domain/", SIMULATION), ("rossmann_local/shop_db/", SHOP_DB),
           ("rossmann_local/reports/", CLICKHOUSE), ("rossmann_local/resources/kafka", KAFKA),
           ("rossmann_local/resources/clickhouse", CLICKHOUSE), ("rossmann_local/resources/sync_api", SYNC_API))


def category(frame: FrameType | None) -> str:
    library = None
    while frame is not None:
        path = frame.f_code.co_filename
        if "/site-packages/dagster" in path:
            return DAGSTER
        if "/rossmann_local/" in path and "/site-packages/" not in path:
            return library or next((name for part, name in MODULES if part in path), OTHER)
        if library is None:
            library = next((name for part, name in LIBRARIES if f"/{part}" in path), None)
        frame = frame.f_back
    return library or OTHER


class WhereTimeGoes:
    """``with WhereTimeGoes() as profile: work()`` then ``profile.seconds()``: category -> seconds.

    A wall-clock interval timer (SIGALRM, restarting interrupted system calls) interrupts the main
    thread, and the handler charges the time since the last sample to the frame it interrupted. A
    thread that samples instead sees the run thread only when the GIL lets it, which over-counts
    waits on I/O and under-counted the pure-Python simulation sevenfold here."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.charged: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
        self.wall = 0.0

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        now = time.perf_counter()
        self.charged[category(frame)] += now - self._last
        self._last = now

    def __enter__(self) -> WhereTimeGoes:
        self._previous = signal.signal(signal.SIGALRM, self._sample)
        signal.siginterrupt(signal.SIGALRM, False)  # the libraries' system calls restart, never fail with EINTR
        self._started = self._last = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)
        return self

    def __exit__(self, _type: type[BaseException] | None, _value: BaseException | None,
                 _tb: TracebackType | None) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        self.wall = time.perf_counter() - self._started

    def seconds(self) -> dict[str, float]:
        return dict(self.charged)

    def rows(self) -> list[tuple[str, str, str]]:
        return [(f"  {name}", f"{seconds:.1f} s ({100 * seconds / self.wall:.0f}%)", "")
                for name, seconds in self.seconds().items()]
