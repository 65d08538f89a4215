"""Dagster wiring: partitions, assets, checks, the shift job and its schedule, in one Definitions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from rossmann_local.defs import _quiet  # noqa: F401 - before the assets are defined
from rossmann_local.defs.chain import build_chain_day_job, build_chain_late_job
from rossmann_local.defs.live import build_live_defs
from rossmann_local.defs.partitions import SHOP_SHIFT_JOB, shop_shift_partitions
from rossmann_local.defs.report_assets import build_report_assets
from rossmann_local.defs.scenario_assets import build_day_sensor, build_scenario_assets
from rossmann_local.defs.schedule import build_shift_schedule
from rossmann_local.defs.shop_assets import build_shop_assets
from rossmann_local.defs.streaming import (
    RUN_KIND_TAG,
    build_sold_again_sensor,
    build_stock_assets,
    build_streaming_defs,
)
from rossmann_local.domain.world import World
from rossmann_local.resources.catalogue_admin import catalogue_admin_from_env
from rossmann_local.resources.clickhouse import clickhouse_from_env
from rossmann_local.resources.kafka import kafka_from_env
from rossmann_local.resources.live_clock import LiveClockFile
from rossmann_local.resources.scenario_ledger import scenario_ledger_from_env
from rossmann_local.resources.shop_databases import shop_databases_from_env
from rossmann_local.resources.sync_api_client import sync_api_client_from_env
from rossmann_local.settings import load_world

__all__ = ["SHOP_SHIFT_JOB", "build_definitions", "default_resources"]


def default_resources() -> dict[str, Any]:
    """Each resource as the environment configures it, with its no-service default."""
    return {"shop_databases": shop_databases_from_env(), "sync_api": sync_api_client_from_env(),
            "clickhouse": clickhouse_from_env(), "kafka": kafka_from_env(), "live_clock": LiveClockFile()}


def build_definitions(world: World | None = None, resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    world = world or load_world()
    partitions = shop_shift_partitions(world)
    assets = [*build_shop_assets(world, partitions), *build_stock_assets(world, partitions),
              *build_report_assets(world, partitions)]
    catalogue_upsert_job, catalogue_changes_sensor = build_streaming_defs(world)
    shop_shift_job = dg.define_asset_job(
        SHOP_SHIFT_JOB, selection=dg.AssetSelection.assets(*assets),
        description="One shift of one shop: sync the cache, take the deliveries, simulate the terminals' sales, "
                    "send the stock levels and the transactions and delivery reports.",
        tags={RUN_KIND_TAG: "shop_shift"},
    )
    chain_day_job, chain_late_job = build_chain_day_job(world), build_chain_late_job(world)
    live_sales_job, live_clock_job, live_clock_sensor = build_live_defs(world, shop_shift_job, chain_day_job,
                                                                        chain_late_job)
    sold_again_sensor = build_sold_again_sensor(world, shop_shift_job)
    # Off by default: switched on, it sells every shop's next shift of the world at each shift's end.
    # The catalogue sensor is on by default (defs.streaming): changes on Kafka should reach the shops.
    shift_schedule = build_shift_schedule(world, shop_shift_job)
    day_assets = build_scenario_assets(world)
    day_sensor = build_day_sensor(world, day_assets, partitions)
    return dg.Definitions(assets=[*assets, *day_assets],
                          jobs=[shop_shift_job, catalogue_upsert_job, live_sales_job, live_clock_job,
                                chain_day_job, chain_late_job],
                          schedules=[shift_schedule],
                          sensors=[catalogue_changes_sensor, sold_again_sensor, day_sensor, live_clock_sensor],
                          # A run is one process: its steps run in it, one after another (the shift's
                          # steps depend on each other anyway), without a process per step.
                          executor=dg.in_process_executor,
                          resources={"live_clock": LiveClockFile(), "scenario_ledger": scenario_ledger_from_env(),
                                     "catalogue_admin": catalogue_admin_from_env(),
                                     **(resources or default_resources())})
