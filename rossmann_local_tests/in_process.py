"""Jobs and sensors executed in the test process, with Dagster's public testing API (``execute_in_process``,
``build_sensor_context``): the asset-level tests and the benchmarks exercise the code location here
without a daemon. Every command (``make day``, ``make live``, ``make backfill``) launches its runs
through the daemon instead (``rossmann_local/local/dagster_ui.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import dagster as dg

from rossmann_local.defs.partitions import partition_key, range_tags
from rossmann_local.defs.streaming import CATALOGUE_SENSOR, CATALOGUE_UPSERT_JOB, RUN_KEY_TAG
from rossmann_local.domain.shifts import ShiftWindow
from rossmann_local.domain.world import Shop, World
from rossmann_local.resources.kafka import KafkaResource

# Runs executed here report failures to their caller; Dagster's console log would repeat each with stack traces.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def first_failure(result: dg.ExecuteInProcessResult) -> str:
    """The root cause of the first failed step, as one line."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            return f"{event.step_key}: {error.cls_name}: {error.message.strip().splitlines()[0]}"
    return "run failed"


def run_shifts(job: dg.JobDefinition, instance: dg.DagsterInstance, world: World, first: ShiftWindow,
               last: ShiftWindow, assets: list[str] | None = None, *, first_shop: Shop | None = None,
               last_shop: Shop | None = None) -> dg.ExecuteInProcessResult:
    """Every shop's shifts from ``first`` to ``last`` in one run (of the named ``assets`` only, if
    given; of the shops from ``first``/``last`` shop only, if given): the ranged run a backfill or
    ``make day`` launches, executed here."""
    first_shop = first_shop or world.shops[0]
    last_shop = last_shop or world.shops[-1]
    tags = range_tags(str(partition_key(first, first_shop.shop_id)), str(partition_key(last, last_shop.shop_id)))
    selection = [dg.AssetKey(name) for name in assets] if assets else None
    return job.execute_in_process(instance=instance, tags=tags, run_config=QUIET_RUN_CONFIG, raise_on_error=False,
                                  asset_selection=selection)


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
