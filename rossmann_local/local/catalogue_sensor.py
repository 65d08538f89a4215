"""The daemon's part for the catalogue sensor, done in this process: evaluate one tick with the
stored cursor, then execute the upsert runs it requested right away (in a deployment the daemon
launches them). Used by the main command, the benchmarks and the tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import dagster as dg

from rossmann_local.defs.streaming import CATALOGUE_UPSERT_JOB, RUN_KEY_TAG
from rossmann_local.resources.kafka import KafkaResource

CATALOGUE_SENSOR = "catalogue_changes_sensor"


class CursorStore(Protocol):
    def read(self) -> str | None: ...

    def write(self, cursor: str) -> None: ...


class MemoryCursor:
    """A cursor kept in memory, starting at ``cursor``."""

    def __init__(self, cursor: str | None = None) -> None:
        self.value = cursor

    def read(self) -> str | None:
        return self.value

    def write(self, cursor: str) -> None:
        self.value = cursor


class CatalogueSensorDriver:
    def __init__(self, definitions: dg.Definitions, instance: dg.DagsterInstance, cursor: CursorStore,
                 run_config: Mapping[str, Any] | None = None) -> None:
        self.sensor = definitions.resolve_sensor_def(CATALOGUE_SENSOR)
        self.job = definitions.resolve_job_def(CATALOGUE_UPSERT_JOB)
        self.kafka: KafkaResource = definitions.resources["kafka"]  # type: ignore[index,assignment]
        self.instance, self.cursor_store, self.run_config = instance, cursor, dict(run_config or {})

    def tick(self, kafka: KafkaResource | None = None) -> dg.SensorResult:
        """One evaluation; the new cursor is stored only when the tick succeeded."""
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor_store.read(),
                                          resources={"kafka": kafka or self.kafka})
        result = self.sensor(context)
        if result.cursor is not None:
            self.cursor_store.write(result.cursor)
        return result

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """The requested run, tagged with its run key as the daemon tags it."""
        return self.job.execute_in_process(
            run_config={**(request.run_config or {}), **self.run_config}, instance=self.instance,
            tags={**request.tags, RUN_KEY_TAG: request.run_key}, raise_on_error=False)

    def tick_and_run(self) -> list[tuple[dg.RunRequest, dg.ExecuteInProcessResult]]:
        return [(request, self.run(request)) for request in self.tick().run_requests or []]
