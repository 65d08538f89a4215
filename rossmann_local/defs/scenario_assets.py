"""The scenario ledger as a Dagster asset, partitioned by day: the faults the scenario
(``ROSSMANN_SCENARIO``) plans for the day, labelled, written to the ledger table. It is planned from
the scenario, its seed, the world and the day alone, so it can be materialized for any day, in any
order, and gives the same rows."""

from collections import Counter
from datetime import date, timedelta

import dagster as dg

from rossmann_local.domain.scenario import FAULT_KINDS, plan_day
from rossmann_local.domain.world import World
from rossmann_local.resources.scenario_ledger import ScenarioLedger

SCENARIO_GROUP = "scenario"


def day_partitions(world: World) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=world.start_date.isoformat(),
                                        end_date=(world.end_date + timedelta(days=1)).isoformat())


def build_scenario_assets(world: World) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=day_partitions(world), group_name=SCENARIO_GROUP, kinds={"sqlite"})
    def scenario_ledger(context: dg.AssetExecutionContext, scenario_ledger: ScenarioLedger) -> dg.MaterializeResult:
        """Every fault the scenario injects on the day: what, on which topic and key, for which
        message's effective time (table ``scenario_ledger``). Empty with no scenario."""
        day = date.fromisoformat(context.partition_key)
        scenario = scenario_ledger.loaded()
        entries = plan_day(scenario, world, day).ledger if scenario else []
        scenario_ledger.write_day(scenario, day, entries)
        kinds = Counter(e.kind for e in entries)
        return dg.MaterializeResult(metadata={
            "scenario": scenario.name if scenario else "none", "seed": scenario.seed if scenario else 0,
            "entries": len(entries), **{kind: kinds.get(kind, 0) for kind in FAULT_KINDS}})

    return [scenario_ledger]
