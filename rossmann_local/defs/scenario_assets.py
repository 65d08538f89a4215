"""Per day: the scenario ledger (the faults the scenario, ``ROSSMANN_SCENARIO``, plans for the day,
labelled) and the expected answers (what each shop's day must come to, checked against the reports).
Both are computed from their inputs alone (the scenario, its seed, the world, the chain's catalogue
and the day), so a day can be materialized in any order, as often as wanted, with the same rows."""

from collections import Counter
from datetime import date, timedelta

import dagster as dg

from rossmann_local.defs.chain import CHAIN_LATE_JOB, chain_day_done, chain_runs, late_changes_of
from rossmann_local.defs.partitions import UNFINISHED, day_partitions, partition_key, shops_being_sold
from rossmann_local.defs.streaming import RUN_KIND_TAG, SENSOR_INTERVAL_S, shifts_awaiting_sale_again
from rossmann_local.domain.scenario import FAULT_KINDS, plan_day
from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.world import World
from rossmann_local.resources.clickhouse import CLICKHOUSE_POOL, ClickHouseReports
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.resources.scenario_ledger import ScenarioLedger
from rossmann_local.resources.shop_databases import ShopDatabases
from rossmann_local.resources.sync_api_client import SyncApiClient
from rossmann_local.shop.catalogue import catalogue_lag
from rossmann_local.shop.expected_answers import expected_shops, send_expected, shops_without_their_earlier_days

SCENARIO_GROUP = "scenario"


def build_scenario_assets(world: World) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=day_partitions(world), group_name=SCENARIO_GROUP, kinds={"sqlite"})
    def scenario_ledger(context: dg.AssetExecutionContext, scenario_ledger: ScenarioLedger) -> dg.MaterializeResult:
        """Every fault the scenario injects on the day: what, on which topic and key, for which
        message's effective time (table ``scenario_ledger``). Empty with no scenario. ``make day``
        injects exactly these faults (the local stack); materialized elsewhere, it is the plan."""
        day = date.fromisoformat(context.partition_key)
        scenario = scenario_ledger.loaded()
        entries = plan_day(scenario, world, day).ledger if scenario else []
        scenario_ledger.write_day(scenario, day, entries)
        kinds = Counter(e.kind for e in entries)
        return dg.MaterializeResult(metadata={
            "scenario": scenario.name if scenario else "none", "seed": scenario.seed if scenario else 0,
            "entries": len(entries), **{kind: kinds.get(kind, 0) for kind in FAULT_KINDS}})

    @dg.asset(partitions_def=day_partitions(world), group_name=SCENARIO_GROUP, kinds={"clickhouse"},
              pool=CLICKHOUSE_POOL,
              check_specs=[dg.AssetCheckSpec(
                  "reports_equal_expected_answers", asset="expected_answers",
                  description="Receipts, lines, units, revenue and units delivered in the transactions and "
                              "delivery reports equal the expected answers, per shop x day.")])
    def expected_answers(context: dg.AssetExecutionContext, sync_api: SyncApiClient,
                         clickhouse: ClickHouseReports, shop_databases: ShopDatabases) -> dg.MaterializeResult:
        """What each shop's day must come to (``shop_reports.expected_shop_day``) and the catalogue at
        its close (``shop_reports.expected_catalogue``), simulated from the Sync API's catalogue and
        the world from its first day, never read back from the chain's outputs. Materialize it after
        the day's shifts: its check compares the reports with it."""
        day = date.fromisoformat(context.partition_key)
        shops = expected_shops(world, [day], sync_api)
        compared = send_expected(world, clickhouse, day, shops)
        differing = {f"shop {c.expected.shop_id}": {name: {"expected": str(getattr(c.expected, name)),
                                                          "reported": str(c.reported[name])} for name in c.differing}
                     for c in compared if c.differing}
        # Read only when the figures differ: whether those shops ran the days before this one.
        lacking = shops_without_their_earlier_days(world, day, shop_databases) if differing else []
        if lacking:
            # Not the chain's fault: those shops opened the day without the days before it.
            check = dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN,
                description=f"not comparable: shops {', '.join(map(str, lacking))} did not run every day before "
                            f"{day} (the expected answers assume the days ran in order from {world.start_date})",
                metadata={"differing": dg.MetadataValue.json(differing)})
        else:
            check = dg.AssetCheckResult(
                passed=not differing,
                description=f"{len(compared)} shops: the reports equal the expected answers" if not differing
                else f"{len(differing)} of {len(compared)} shops differ from the expected answers",
                metadata={"differing": dg.MetadataValue.json(differing)})
        return dg.MaterializeResult(
            metadata={"shops": len(shops), "receipts": sum(d.receipts for s in shops for d in s.days),
                      "revenue": float(sum(d.revenue for s in shops for d in s.days)),
                      "catalogue_rows": sum(len(s.catalogue) for s in shops)},
            check_results=[check])

    return [scenario_ledger, expected_answers]


DAY_SENSOR = "day_answers_sensor"
REPORTED_ASSETS = ("transactions_report", "delivery_report")


def build_day_sensor(world: World, day_assets: list[dg.AssetsDefinition],
                     shift_partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(name=DAY_SENSOR, asset_selection=day_assets, minimum_interval_seconds=SENSOR_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Once every shop x shift of a day has both its reports, materializes that day's "
                           "scenario ledger and expected answers (whose check compares the reports with them), "
                           "day after day in the world's order, from the first day not yet reported when it is "
                           "switched on, while no shift run is under way and every catalogue change is applied "
                           "and sold again where late, and once a scenario's late changes of the day are entered "
                           "(chain_late_changes_job); the cursor is the last day done.")
    def day_answers_sensor(context: dg.SensorEvaluationContext, scenario_ledger: ScenarioLedger,
                           shop_databases: ShopDatabases, kafka: KafkaResource) -> dg.SensorResult | dg.SkipReason:
        def reported(day: date) -> bool:
            keys = [str(partition_key(shift, shop.shop_id)) for shift in shifts_of_day(world, day)
                    for shop in world.shops]
            statuses = [context.instance.get_status_by_partition(dg.AssetKey(asset), keys, shift_partitions) or {}
                        for asset in REPORTED_ASSETS]
            return all(status.get(key) == dg.AssetPartitionStatus.MATERIALIZED for status in statuses for key in keys)

        day = date.fromisoformat(context.cursor) + timedelta(days=1) if context.cursor else world.start_date
        if context.cursor is None:
            # Switched on for the first time: the days already reported are history (make day checked
            # its own); it checks each day whose reports come in from now on.
            while day <= world.end_date and reported(day):
                day += timedelta(days=1)
            return dg.SensorResult(cursor=(day - timedelta(days=1)).isoformat(),
                                   skip_reason=f"checking each day from {day} on, once its reports are in")
        if not reported(day):  # the cheap question first: the gates below read every shop and the broker
            return dg.SkipReason(f"the reports of {day} are not all in yet")
        if shops_being_sold(context.instance, world):
            return dg.SkipReason("shifts are being sold; the day is checked once they are done")
        # A late catalogue version on its way may fall into the day's sold shifts: applied, then sold again, first.
        upserting = context.instance.get_runs(
            dg.RunsFilter(statuses=UNFINISHED, tags={RUN_KIND_TAG: "catalogue_upsert"}), limit=1)
        if upserting or (lag := catalogue_lag(world, world.shop_ids, shop_databases, kafka)):
            return dg.SkipReason("catalogue changes are being applied; the day is checked once they are in"
                                 if upserting else f"{lag} catalogue message(s) not applied yet; the day waits")
        if awaiting := shifts_awaiting_sale_again(context.instance):
            return dg.SkipReason(f"{', '.join(awaiting)} await selling again (a late catalogue version fell into "
                                 "them); the day is checked once they are sold")
        scenario = scenario_ledger.loaded()

        def late_entered(day: date) -> bool:
            """A scenario's late changes of the day are in (the day is not complete before them)."""
            return not late_changes_of(scenario, world, day) or chain_day_done(
                chain_runs(context.instance, CHAIN_LATE_JOB, day))

        requests = []
        while day <= world.end_date and len(requests) < 10 and reported(day) and late_entered(day):
            requests.append(dg.RunRequest(run_key=f"day {day}", partition_key=day.isoformat()))
            day += timedelta(days=1)
        if not requests:
            return dg.SkipReason(f"{day}'s late catalogue changes are not entered yet ({CHAIN_LATE_JOB})")
        return dg.SensorResult(run_requests=requests, cursor=(day - timedelta(days=1)).isoformat())

    return day_answers_sensor


def day_asset(world: World, name: str) -> dg.AssetsDefinition:
    """One of the per-day assets, to materialize on its own (``make day`` does, after the day)."""
    return next(a for a in build_scenario_assets(world) if a.key == dg.AssetKey(name))
