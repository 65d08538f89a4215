"""The chain's side of a day: the catalogue changes its web/admin side makes (the afternoon promotion,
and the scenario's burst of promotions), entered in the Sync API as a job per day, each change in
effect from its simulated time. From there they travel as they would from the chain's own admin: the
Sync API's outbox to Kafka (the catalogue sensor's upsert runs) and the next sync of every shop. A
scenario's faults on the stream follow, made of the messages published for its changes, so a
deployment, a backfill or the UI gets them as make day does (its outages are the local stack's).
A scenario's late changes are a second job, run once the day's shifts are sold: they take effect
during a shift already sold, so ``sold_again_sensor`` sells it again."""

from datetime import date

import dagster as dg

from rossmann_local.defs.partitions import day_partitions
from rossmann_local.defs.streaming import RUN_KIND_TAG
from rossmann_local.domain.catalogue_changes import CatalogueChange
from rossmann_local.domain.scenario import Scenario, day_changes, plan_day
from rossmann_local.domain.topics import CATALOGUE_TOPICS
from rossmann_local.domain.world import World
from rossmann_local.resources.catalogue_admin import CatalogueAdmin, await_published, deliver_stream_faults
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.scenario_ledger import ScenarioLedger

CHAIN_DAY_JOB = "chain_catalogue_day_job"
CHAIN_DAY_STEP = "enter_the_days_catalogue_changes"
CHAIN_LATE_JOB = "chain_late_changes_job"
CHAIN_LATE_STEP = "enter_the_days_late_changes"


def on_time_changes(scenario: Scenario | None, world: World, day: date) -> list[CatalogueChange]:
    """The day's changes the chain enters before they take effect: all of them, but a scenario's late ones."""
    return plan_day(scenario, world, day).changes if scenario is not None else day_changes(None, world, day)


def late_changes_of(scenario: Scenario | None, world: World, day: date) -> list[CatalogueChange]:
    """The day's changes the scenario has the chain enter after the day's shifts are sold."""
    return plan_day(scenario, world, day).late if scenario is not None else []


def effective_span(changes: list[CatalogueChange]) -> dict[str, dg.MetadataValue]:
    """The first and last effective time of the changes a run entered, as its metadata."""
    return {"first_effective": dg.MetadataValue.text(min(c.at for c in changes).isoformat() if changes else ""),
            "last_effective": dg.MetadataValue.text(max(c.at for c in changes).isoformat() if changes else "")}


def build_chain_day_job(world: World) -> dg.JobDefinition:
    @dg.op(name=CHAIN_DAY_STEP)
    def enter_the_days_catalogue_changes(context: dg.OpExecutionContext, catalogue_admin: CatalogueAdmin,
                                         scenario_ledger: ScenarioLedger, kafka: KafkaResource) -> dg.Output[int]:
        """The day's changes (with ``ROSSMANN_SCENARIO``, its burst too, but not its late changes)
        entered in the Sync API; then the scenario's faults on the stream (duplicates, older versions
        after newer, malformed messages), made of the messages the Sync API published for those
        changes. The same day entered again enters the same versions, which change nothing; its faults
        are delivered again, which the shops absorb."""
        day = date.fromisoformat(context.partition_key)
        scenario = scenario_ledger.loaded()
        changes = on_time_changes(scenario, world, day)
        faults = plan_day(scenario, world, day).faults if scenario is not None else []
        # Where the catalogue topics end before the changes: their messages, and the faults' originals, follow.
        marks = kafka.topic_ends(CATALOGUE_TOPICS) if faults else {}
        entered = catalogue_admin.enter(changes)
        delivered = deliver_stream_faults(kafka, faults, marks, scenario_ledger.provenance(world))
        return dg.Output(entered, metadata={
            "changes": entered, "scenario": scenario.name if scenario else "none", "stream_faults": delivered,
            **effective_span(changes)})

    @dg.job(name=CHAIN_DAY_JOB, partitions_def=day_partitions(world), tags={RUN_KIND_TAG: "chain_day"},
            description="The chain's catalogue changes of one day (the afternoon promotion; a scenario's "
                        "burst), entered in the Sync API in effect from their simulated times, and the "
                        "scenario's faults on the catalogue stream.")
    def chain_catalogue_day_job() -> None:
        enter_the_days_catalogue_changes()

    return chain_catalogue_day_job


def build_chain_late_job(world: World) -> dg.JobDefinition:
    @dg.op(name=CHAIN_LATE_STEP)
    def enter_the_days_late_changes(context: dg.OpExecutionContext, catalogue_admin: CatalogueAdmin,
                                    scenario_ledger: ScenarioLedger, kafka: KafkaResource) -> dg.Output[int]:
        """The scenario's late changes of the day entered in the Sync API, dated when they took effect
        (during a shift the shops have sold): the upsert run observes the shifts they fall into and
        ``sold_again_sensor`` sells them again. Entered again, they change nothing."""
        day = date.fromisoformat(context.partition_key)
        scenario = scenario_ledger.loaded()
        late = late_changes_of(scenario, world, day)
        marks = kafka.topic_ends(CATALOGUE_TOPICS) if late else {}
        entered = catalogue_admin.enter(late)
        await_published(kafka, late, marks)  # done once they are on Kafka: a sensor then sees them outstanding
        return dg.Output(entered, metadata={
            "late_changes": entered, "scenario": scenario.name if scenario else "none",
            "minutes_late": scenario.late.minutes if scenario is not None and scenario.late else 0,
            **effective_span(late)})

    @dg.job(name=CHAIN_LATE_JOB, partitions_def=day_partitions(world), tags={RUN_KIND_TAG: "chain_late"},
            description="A scenario's late catalogue changes of one day (ROSSMANN_SCENARIO's [late]), entered "
                        "once the day's shifts are sold, dated when they took effect: the shifts they fall "
                        "into are sold again by sold_again_sensor. Nothing without a scenario.")
    def chain_late_changes_job() -> None:
        enter_the_days_late_changes()

    return chain_late_changes_job


def chain_runs(instance: dg.DagsterInstance, job_name: str, day: date) -> list[dg.DagsterRun]:
    """The runs of a chain job for the day, newest first."""
    return list(instance.get_runs(dg.RunsFilter(job_name=job_name, tags={"dagster/partition": day.isoformat()}),
                                  limit=20))


def chain_day_done(runs: list[dg.DagsterRun]) -> bool:
    """Whether one of a chain job's runs for a day (``chain_runs``) succeeded."""
    return any(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
