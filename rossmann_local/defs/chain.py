"""The chain's side of a day: the catalogue changes its web/admin side makes (the afternoon promotion,
and the scenario's burst of promotions), entered in the Sync API as a job per day, each change in
effect from its simulated time. From there they travel as they would from the chain's own admin: the
Sync API's outbox to Kafka (the catalogue sensor's upsert runs) and the next sync of every shop. A
scenario's faults on the stream follow, made of the messages published for its changes, so a
deployment, a backfill or the UI gets them as make day does (its outages are the local stack's)."""

from datetime import date

import dagster as dg

from rossmann_local.defs.scenario_assets import day_partitions
from rossmann_local.defs.streaming import RUN_KIND_TAG
from rossmann_local.domain.scenario import day_changes, plan_day
from rossmann_local.domain.topics import CATALOGUE_TOPICS
from rossmann_local.domain.world import World
from rossmann_local.resources.catalogue_admin import CatalogueAdmin, deliver_stream_faults
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.scenario_ledger import ScenarioLedger

CHAIN_DAY_JOB = "chain_catalogue_day_job"
CHAIN_DAY_STEP = "enter_the_days_catalogue_changes"


def build_chain_day_job(world: World) -> dg.JobDefinition:
    @dg.op(name=CHAIN_DAY_STEP)
    def enter_the_days_catalogue_changes(context: dg.OpExecutionContext, catalogue_admin: CatalogueAdmin,
                                         scenario_ledger: ScenarioLedger, kafka: KafkaResource) -> dg.Output[int]:
        """The day's changes (with ``ROSSMANN_SCENARIO``, its burst too) entered in the Sync API; then the
        scenario's faults on the stream (duplicates, older versions after newer, malformed messages), made
        of the messages the Sync API published for those changes. The same day entered again enters the
        same versions, which change nothing; its faults are delivered again, which the shops absorb."""
        day = date.fromisoformat(context.partition_key)
        scenario = scenario_ledger.loaded()
        changes = day_changes(scenario, world, day)
        faults = plan_day(scenario, world, day).faults if scenario is not None else []
        # Where the catalogue topics end before the changes: their messages, and the faults' originals, follow.
        marks = {key: high for key, (_low, high) in kafka.topic_watermarks(CATALOGUE_TOPICS).items()} if faults else {}
        entered = catalogue_admin.enter(changes)
        delivered = deliver_stream_faults(kafka, faults, marks, scenario_ledger.provenance(world))
        return dg.Output(entered, metadata={
            "changes": entered, "scenario": scenario.name if scenario else "none", "stream_faults": delivered,
            "first_effective": dg.MetadataValue.text(min(c.at for c in changes).isoformat() if changes else ""),
            "last_effective": dg.MetadataValue.text(max(c.at for c in changes).isoformat() if changes else "")})

    @dg.job(name=CHAIN_DAY_JOB, partitions_def=day_partitions(world), tags={RUN_KIND_TAG: "chain_day"},
            description="The chain's catalogue changes of one day (the afternoon promotion; a scenario's "
                        "burst), entered in the Sync API in effect from their simulated times, and the "
                        "scenario's faults on the catalogue stream.")
    def chain_catalogue_day_job() -> None:
        enter_the_days_catalogue_changes()

    return chain_catalogue_day_job
