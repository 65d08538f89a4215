"""Catalogue changes from Kafka: a sensor that requests an upsert run for the new offset ranges, and the run.

The Dagster cursor is the source of truth for offsets. Each tick reads the partitions' watermarks
with a consumer that is assigned, never joins a group and is closed in ``finally``; it requests one
run for every new range of the three topics together (a run per ``MAX_RANGE`` messages when more
came), with run key ``topic:partition:start-end[,...]``, so a tick that fails requests the same
ranges again and Dagster never runs a key twice. One run per tick, not one per topic: every run is
a process of its own (about 2 s before its first step). A run reads and applies its ranges in
chunks of bounded size, the upserts of a chunk going to each shop in one transaction. Batches stay
in the cursor until their run succeeded: a failed run's batch is requested again (run key suffixed
``#attempt``), so nothing is lost, and the versioned upserts make a second application change
nothing.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg

from rossmann_local.defs.metadata import per_partition_metadata
from rossmann_local.defs.partitions import (
    partition_key,
    partitions_in_order,
    range_tags,
    shop_and_shift,
    shops_being_sold,
)
from rossmann_local.defs.shop_assets import SHIFT_TRANSACTIONS
from rossmann_local.domain.shifts import shift_window
from rossmann_local.domain.topics import CATALOGUE_TOPICS
from rossmann_local.domain.world import World
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.shop.catalogue import OffsetSpan, apply_catalogue_ranges, cut_spans
from rossmann_local.shop.shift import last_sold_shift
from rossmann_local.shop.stock import send_stock_levels

CATALOGUE_UPSERT_JOB = "catalogue_upsert_job"
# Messages in one upsert run at most. A run applies them chunk by chunk (``APPLY_CHUNK`` in memory at
# once), so this bounds what a failed run's next attempt reads again, not memory. A run's start (the
# queue, its process, the definitions) costs about 2.5 s: a backlog of 200,000 took four runs and
# paid it four times when this was the chunk's 50,000.
MAX_RANGE = 500_000
RUN_KEY_TAG = "dagster/run_key"
# What kind of run this is, for the run queue's tag limits in dagster.yaml.
RUN_KIND_TAG = "rossmann_local/run"
CATALOGUE_SENSOR = "catalogue_changes_sensor"
SOLD_AGAIN_SENSOR = "sold_again_sensor"
LATE_VERSION = "late_catalogue_version"  # metadata of an observation: the range that brought it

# The sensor daemon loops every 5 s (a fixed pace in Dagster); a sensor's minimum interval of 5 s made it
# skip every other loop (a loop is a little under 5 s apart), so the chain's runs waited 10 s per tick.
# 1 s: evaluated on every loop. Each evaluation is cheap (watermarks, a run query).
SENSOR_INTERVAL_S = 1


class OffsetRange(dg.Config):
    """The messages at offsets [start_offset, end_offset) of one topic partition."""

    topic: str
    partition: int
    start_offset: int
    end_offset: int


class CatalogueRanges(dg.Config):
    """The offset ranges one upsert run applies, together."""

    ranges: list[OffsetRange]


@dataclass
class PendingBatch:
    """The ranges of one requested upsert run, until it succeeded."""

    spans: list[OffsetSpan]
    attempt: int = 1

    @property
    def run_key(self) -> str:
        key = ",".join(f"{topic}:{partition}:{start}-{end}" for topic, partition, start, end in self.spans)
        return key if self.attempt == 1 else f"{key}#{self.attempt}"

    def run_request(self) -> dg.RunRequest:
        config = CatalogueRanges(ranges=[OffsetRange(topic=t, partition=p, start_offset=s, end_offset=e)
                                         for t, p, s, e in self.spans])
        return dg.RunRequest(run_key=self.run_key, tags={"kafka/topic": ",".join(sorted({t for t, *_ in self.spans}))},
                             run_config=dg.RunConfig(ops={"apply_catalogue_changes": config}))

    def dump(self) -> dict[str, object]:
        return {"spans": [list(span) for span in self.spans], "attempt": self.attempt}

    @classmethod
    def parse(cls, data: dict[str, object]) -> "PendingBatch":
        if "topic" in data:  # a cursor written before runs took several ranges: one range each
            return cls([(str(data["topic"]), int(data["partition"]), int(data["start"]), int(data["end"]))],
                       int(data.get("attempt", 1)))
        spans = [(str(t), int(p), int(s), int(e)) for t, p, s, e in data["spans"]]  # type: ignore[union-attr]
        return cls(spans, int(data.get("attempt", 1)))  # type: ignore[arg-type]


def batches(spans: list[OffsetSpan]) -> list[PendingBatch]:
    """The new ranges cut into runs of at most ``MAX_RANGE`` messages, in topic order."""
    return [PendingBatch(group) for group in cut_spans(spans, MAX_RANGE)]


@dataclass
class SensorCursor:
    next_offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> first offset not requested
    pending: list[PendingBatch] = field(default_factory=list)
    unreadable: bool = False  # the stored cursor did not parse; reading starts again from the beginning

    @classmethod
    def parse(cls, text: str | None) -> "SensorCursor":
        """The cursor, or an empty one when it does not parse (e.g. edited by hand): the topics are
        then read again from their start, which changes nothing, since upserts keep the newest
        version and the history keeps each version once."""
        try:
            data = json.loads(text) if text else {}
            return cls(next_offsets={str(k): int(v) for k, v in data.get("next_offsets", {}).items()},
                       pending=[PendingBatch.parse(p) for p in data.get("pending", [])])
        except (ValueError, TypeError, AttributeError, KeyError):
            return cls(unreadable=True)

    def dump(self) -> str:
        return json.dumps({"next_offsets": self.next_offsets, "pending": [p.dump() for p in self.pending]},
                          sort_keys=True)


def build_streaming_defs(world: World) -> tuple[dg.JobDefinition, dg.SensorDefinition]:
    @dg.op(retry_policy=dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL),
           out={"result": dg.Out(dict), "sold_shifts_touched": dg.Out(list)})
    def apply_catalogue_changes(context: dg.OpExecutionContext, config: CatalogueRanges, kafka: KafkaResource,
                                shop_databases: ShopDatabases, scenario_ledger: ScenarioLedger
                                ) -> Iterator[dg.Output | dg.AssetObservation]:
        """Re-read exactly the run's offset ranges and apply them to every shop they concern."""
        spans = [(r.topic, r.partition, r.start_offset, r.end_offset) for r in config.ranges]
        outcome = apply_catalogue_ranges(world, shop_databases, kafka, spans, scenario_ledger.provenance(world))
        for letter in outcome.dead_letters:
            context.log.warning(f"dead letter {letter.key}: {letter.reason}")
        summary = outcome.as_metadata()
        where = ", ".join(f"{r.topic}[{r.partition}] {r.start_offset}..{r.end_offset - 1}" for r in config.ranges)
        yield dg.Output(summary, metadata={**summary, "range": where})
        # Each sold shift (shop, start) a late version falls into, observed on its shift_transactions
        # partition: sold_again_sensor sells it again (make day sells the output's shifts itself).
        for shop_id, start in sorted(outcome.shifts_touched):
            yield dg.AssetObservation(asset_key=SHIFT_TRANSACTIONS,
                                      partition=str(partition_key(shift_window(world, start), shop_id)),
                                      metadata={LATE_VERSION: where})
        touched = [[shop_id, start.isoformat()] for shop_id, start in sorted(outcome.shifts_touched)]
        yield dg.Output(touched, output_name="sold_shifts_touched",
                        metadata={"shifts": dg.MetadataValue.json(touched)})

    @dg.job(name=CATALOGUE_UPSERT_JOB, description="Apply one offset range of a catalogue topic to every shop.",
            tags={RUN_KIND_TAG: "catalogue_upsert"})
    def catalogue_upsert_job() -> None:
        apply_catalogue_changes()

    @dg.sensor(name=CATALOGUE_SENSOR, job=catalogue_upsert_job, minimum_interval_seconds=SENSOR_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.RUNNING)
    def catalogue_changes_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource) -> dg.SensorResult:
        """Requests one upsert run for the new offset ranges of the three catalogue topics."""
        cursor = SensorCursor.parse(context.cursor)
        if cursor.unreadable:
            context.log.warning("the sensor's cursor did not parse; the catalogue topics are read again from "
                                "their start (applying a message twice changes nothing)")
        requests = []
        still_pending = []
        for pending in cursor.pending:
            runs = context.instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: pending.run_key}), limit=1)
            status = runs[0].status if runs else None
            if status == dg.DagsterRunStatus.SUCCESS:
                continue
            if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                pending = PendingBatch(pending.spans, pending.attempt + 1)
                requests.append(pending.run_request())
            still_pending.append(pending)
        new: list[OffsetSpan] = []
        for (topic, partition), (low, high) in kafka.topic_watermarks(CATALOGUE_TOPICS).items():
            key = f"{topic}:{partition}"
            start = max(cursor.next_offsets.get(key, low), low)
            if cursor.next_offsets.get(key, low) < low:
                context.log.warning(f"{key}: offsets {cursor.next_offsets[key]}..{low - 1} were deleted by "
                                    "retention before they were read")
            if start < high:
                new.append((topic, partition, start, high))
            cursor.next_offsets[key] = max(high, start, cursor.next_offsets.get(key, 0))
        for batch in batches(new):
            requests.append(batch.run_request())
            still_pending.append(batch)
        cursor.pending = still_pending
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump())

    return catalogue_upsert_job, catalogue_changes_sensor


@dataclass
class SoldAgainCursor:
    """The last observation read, and the shops still to sell again (from their first touched shift)
    that were waiting for a shift run of theirs to finish. Plain ``"<storage id>"`` when none wait."""

    after: int
    waiting: dict[int, datetime] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "SoldAgainCursor":
        if text.isdigit():
            return cls(int(text))
        data = json.loads(text)
        return cls(int(data["after"]), {int(k): datetime.fromisoformat(v) for k, v in data["waiting"].items()})

    def dump(self) -> str:
        if not self.waiting:
            return str(self.after)
        return json.dumps({"after": self.after, "waiting": {str(k): v.isoformat() for k, v in self.waiting.items()}},
                          sort_keys=True)


def build_sold_again_sensor(world: World, shop_shift_job: "dg.UnresolvedAssetJobDefinition") -> dg.SensorDefinition:
    @dg.sensor(name=SOLD_AGAIN_SENSOR, job=shop_shift_job, minimum_interval_seconds=SENSOR_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="When an upsert run observed a late catalogue version falling into a shift a shop has "
                           "sold (an observation of that shift_transactions partition), sells that shop's shifts "
                           "again from the first one touched to its last sold one, in one run in shift order (each "
                           "later shift opens with the stock the one before leaves); a shop with a shift run "
                           "queued or under way waits for it, then is sold again up to that shift too.")
    def sold_again_sensor(context: dg.SensorEvaluationContext,
                          shop_databases: ShopDatabases) -> dg.SensorResult | dg.SkipReason:
        cursor = SoldAgainCursor.parse(context.cursor) if context.cursor else None
        records = context.instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(SHIFT_TRANSACTIONS),
                                  after_storage_id=cursor.after if cursor else None),
            limit=10_000, ascending=True).records
        if cursor is None:
            # Switched on for the first time: it sells again what is observed from now on (make day
            # sells its own late shifts again; a deployment's earlier observations are history).
            start = str(records[-1].storage_id) if records else "0"
            return dg.SensorResult(cursor=start, skip_reason="watching for late catalogue versions from now on")
        if not records and not cursor.waiting:
            return dg.SkipReason("no late catalogue version observed since the last tick")
        late = [r for r in records if r.partition_key and r.asset_observation
                and LATE_VERSION in r.asset_observation.metadata]
        touched = dict(cursor.waiting)
        for record in late:
            shop, shift = shop_and_shift(world, record.partition_key)
            touched[shop.shop_id] = min(touched.get(shop.shop_id, shift.start), shift.start)
        # A shop's range run must not sell beside another run of its shifts (the run queue's per-shop
        # limit holds single-partition runs only): it waits, and then reaches the shift that run sold.
        busy = shops_being_sold(context.instance, world)
        newest = records[-1].storage_id if records else cursor.after
        after = SoldAgainCursor(newest, {shop_id: first for shop_id, first in touched.items() if shop_id in busy})
        requests = []
        for shop_id, first in sorted(touched.items()):
            if shop_id in busy:
                continue
            last = last_sold_shift(world, world.shop(shop_id), shop_databases)
            if last is not None:
                requests.append(dg.RunRequest(
                    run_key=f"sold again {shop_id} after {newest}", tags={
                        **range_tags(str(partition_key(shift_window(world, first), shop_id)),
                                     str(partition_key(last, shop_id))),
                        RUN_KIND_TAG: "sold_again"}))
        waiting = f"shops {sorted(after.waiting)} wait for their shift runs under way" if after.waiting else None
        return dg.SensorResult(run_requests=requests, cursor=after.dump(),
                               skip_reason=waiting if not requests else None)

    return sold_again_sensor


def shifts_awaiting_sale_again(instance: dg.DagsterInstance, since: float = 0.0, newest: int = 50) -> list[str]:
    """The shop x shift partitions a late catalogue version fell into (observed by an upsert run at or
    after ``since``, a POSIX time, among the ``newest`` observations) that have not been sold since:
    what ``sold_again_sensor`` still has to sell again. A step that builds on those shifts waits."""
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(SHIFT_TRANSACTIONS)),
                                          limit=newest, ascending=False).records
    awaiting: list[str] = []
    for record in records:
        if (not record.partition_key or record.partition_key in awaiting or record.asset_observation is None
                or LATE_VERSION not in record.asset_observation.metadata or record.event_log_entry.timestamp < since):
            continue
        sold_since = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(SHIFT_TRANSACTIONS), asset_partitions=[record.partition_key],
                                  after_storage_id=record.storage_id), limit=1).records
        if not sold_since:
            awaiting.append(record.partition_key)
    return sorted(awaiting)


def build_stock_assets(world: World, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=partitions, group_name="shop", deps=["shift_transactions"], kinds={"kafka"})
    def shift_stock_levels(context: dg.AssetExecutionContext, shop_databases: ShopDatabases,
                           kafka: KafkaResource, scenario_ledger: ScenarioLedger) -> dg.MaterializeResult:
        """The shop's stock levels sent to the chain (``oltp_update_product_quantity``, key the shop id):
        every 50 simulated minutes of the shift, the absolute stock of the products that changed.
        Messages are queued in the shop database and leave the queue only once the broker confirmed
        them, so a broker outage delays them and loses none; each is later read back where the broker
        put it, and sent again if a broker lost it after confirming. A run over many shifts queues
        them all, then sends every shop's queue and waits for the broker once."""
        ordered = partitions_in_order(world, context.partition_keys)
        sent = send_stock_levels(world, [(p.shop, p.shift) for p in ordered], shop_databases, kafka,
                                 scenario_ledger.provenance(world))
        own = {p.key: dict(zip(("messages_planned", "messages_sent"), sent.per_shift[p.shop.shop_id, p.shift.start],
                               strict=True)) for p in ordered}
        # The queue is delivered and read back once per run: these figures are the run's.
        delivery = {"sent_from_earlier_shifts": sent.sent_from_earlier_shifts, "broker_errors": sent.broker_errors,
                    "parts_verified_on_topic": sent.verified, "parts_lost_and_resent": sent.lost_and_resent,
                    "parts_found_already_sent": sent.found_on_topic}
        return dg.MaterializeResult(metadata={**per_partition_metadata(context, own), **delivery})

    return [shift_stock_levels]
