"""Dagster wiring: partitions, assets, checks, the shift job and its schedule, in one Definitions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from rossmann_local.defs import _quiet  # noqa: F401 - before the assets are defined
from rossmann_local.defs.live import build_live_defs
from rossmann_local.defs.partitions import shop_shift_partitions
from rossmann_local.defs.report_assets import build_report_assets
from rossmann_local.defs.scenario_assets import build_scenario_assets
from rossmann_local.defs.shop_assets import build_shop_assets
from rossmann_local.defs.streaming import RUN_KIND_TAG, build_stock_assets, build_streaming_defs
from rossmann_local.domain.world import World
from rossmann_local.resources.clickhouse import clickhouse_from_env
from rossmann_local.resources.kafka import kafka_from_env
from rossmann_local.resources.live_clock import LiveClockFile
from rossmann_local.resources.scenario_ledger import scenario_ledger_from_env
from rossmann_local.resources.shop_databases import shop_databases_from_env
from rossmann_local.resources.sync_api_client import sync_api_client_from_env
from rossmann_local.settings import load_world

SHOP_SHIFT_JOB = "shop_shift_job"


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
    live_sales_job, live_clock_sensor = build_live_defs(world, shop_shift_job)
    # Off by default: switched on, it simulates every shop's shifts in real time. The catalogue
    # sensor is on by default (defs.streaming): changes on Kafka should reach the shops.
    shift_schedule = dg.build_schedule_from_partitioned_job(
        shop_shift_job, name="shop_shift_schedule", default_status=dg.DefaultScheduleStatus.STOPPED,
        description="At the end of each shift, run that shift for every shop (off until switched on).",
    )
    return dg.Definitions(assets=[*assets, *build_scenario_assets(world)],
                          jobs=[shop_shift_job, catalogue_upsert_job, live_sales_job],
                          schedules=[shift_schedule], sensors=[catalogue_changes_sensor, live_clock_sensor],
                          resources={"live_clock": LiveClockFile(), "scenario_ledger": scenario_ledger_from_env(),
                                     **(resources or default_resources())})
