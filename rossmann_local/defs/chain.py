"""The chain's side of a day: the catalogue changes its web/admin side makes (the afternoon promotion,
and the scenario's burst of promotions), entered in the Sync API as a job per day, each change in
effect from its simulated time. From there they travel as they would from the chain's own admin: the
Sync API's outbox to Kafka (the catalogue sensor's upsert runs) and the next sync of every shop."""

from datetime import date

import dagster as dg

from rossmann_local.defs.scenario_assets import day_partitions
from rossmann_local.defs.streaming import RUN_KIND_TAG
from rossmann_local.domain.scenario import day_changes
from rossmann_local.domain.world import World
from rossmann_local.resources.catalogue_admin import CatalogueAdmin
from rossmann_local.resources.scenario_ledger import ScenarioLedger

CHAIN_DAY_JOB = "chain_catalogue_day_job"


def build_chain_day_job(world: World) -> dg.JobDefinition:
    @dg.op
    def enter_the_days_catalogue_changes(context: dg.OpExecutionContext, catalogue_admin: CatalogueAdmin,
                                         scenario_ledger: ScenarioLedger) -> dg.Output[int]:
        """The day's changes (with ``ROSSMANN_SCENARIO``, its burst too) entered in the Sync API. The
        same day entered again enters the same versions, which change nothing."""
        day = date.fromisoformat(context.partition_key)
        scenario = scenario_ledger.loaded()
        changes = day_changes(scenario, world, day)
        entered = catalogue_admin.enter(changes)
        return dg.Output(entered, metadata={
            "changes": entered, "scenario": scenario.name if scenario else "none",
            "first_effective": dg.MetadataValue.text(min(c.at for c in changes).isoformat() if changes else ""),
            "last_effective": dg.MetadataValue.text(max(c.at for c in changes).isoformat() if changes else "")})

    @dg.job(name=CHAIN_DAY_JOB, partitions_def=day_partitions(world), tags={RUN_KIND_TAG: "chain_day"},
            description="The chain's catalogue changes of one day (the afternoon promotion; a scenario's "
                        "burst), entered in the Sync API in effect from their simulated times.")
    def chain_catalogue_day_job() -> None:
        enter_the_days_catalogue_changes()

    return chain_catalogue_day_job
