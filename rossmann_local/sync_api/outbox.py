"""Publishes the stand-in's outbox to Kafka (each record keyed, a deletion followed by its keys'
tombstones, for the compacted catalogue topics): in order, and marked published only after the broker
confirmed delivery, so a committed catalogue change is never lost (at worst sent twice, which the
shops' versioned upserts absorb). Each published message is read back where the broker put it once
the broker had time to keep it; one the broker lost after confirming is published again."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from rossmann_local.domain.provenance import Provenance
from rossmann_local.resources.kafka import SETTLE_SECONDS, KafkaResource, Outgoing, wait_until_settled
from rossmann_local.settings import ConfigError
from rossmann_local.sync_api.store import CatalogueStore

log = logging.getLogger("rossmann_local.sync_api.outbox")
# The stand-in is a service of its own: its producer is not the shops' (see KafkaResource.shared_producer).
OUTBOX_CLIENT = "rossmann-local-sync-api-outbox"
OUTBOX_SOURCE = "sync-api outbox"


def publish_outbox(store: CatalogueStore, kafka: KafkaResource, provenance: Provenance, timeout: float = 30.0) -> int:
    """Send every unpublished change (its headers: the time it takes effect); returns how many the
    broker confirmed."""
    outcome = kafka.produce_confirmed(
        (Outgoing(row.topic, row.value, tag=row.message_id, key=row.message_key.encode() if row.message_key else None,
                  headers=provenance.headers(OUTBOX_SOURCE, row.created_at_utc.replace(tzinfo=UTC)))
         for row in store.unpublished()), timeout, client=OUTBOX_CLIENT)
    # A broker error while nothing was waiting (e.g. the broker stopping first on Ctrl-C) loses nothing.
    for error in outcome.errors[:3] if outcome.unconfirmed else ():
        log.warning("%s outbox messages not delivered: %s", outcome.unconfirmed, error)
    store.mark_published(outcome.confirmed, outcome.placed)
    return len(outcome.confirmed)


def verify_published(store: CatalogueStore, kafka: KafkaResource, settle_seconds: float = SETTLE_SECONDS) -> int:
    """Read back every published message confirmed at least ``settle_seconds`` ago at its offset:
    kept ones are verified, lost ones go back to the outbox. Returns how many were lost."""
    now = datetime.now(UTC)  # bookkeeping, wall clock: the broker's durability is a wall-clock matter
    due = [p for p in store.unverified_placements() if (now - p[5]).total_seconds() >= settle_seconds]
    if not due:
        return 0
    kept, lost = [], []
    by_partition: dict[tuple[str, int], list[tuple[int, str, int]]] = {}
    for message_id, topic, payload, partition, offset, _confirmed in due:
        by_partition.setdefault((topic, partition), []).append((message_id, payload, offset))
    try:
        with kafka.consumer() as consumer:
            ends = {key: kafka.watermarks(consumer, *key)[1] for key in by_partition}
    except ConfigError:
        return 0  # the broker is away: checked again next round
    for (topic, partition), wanted in by_partition.items():
        first = min(offset for _, _, offset in wanted)
        high = ends[(topic, partition)]
        found = {m.offset: m.value for m in kafka.read_range(topic, partition, first, high)} if first < high else {}
        for message_id, payload, offset in wanted:  # a tombstone ("" in the outbox) is a record with no value
            (kept if offset in found and found[offset] == (payload.encode() or None) else lost).append(message_id)
    store.settle_placements(kept, lost)
    if lost:
        log.warning("%d published outbox messages were lost by the broker after it confirmed them; "
                    "publishing them again", len(lost))
    return len(lost)


class OutboxRelay:
    """Publishes the outbox every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(self, store: CatalogueStore, kafka: KafkaResource, provenance: Provenance,
                 interval: float = 0.5) -> None:
        self._store, self._kafka, self._provenance, self._interval = store, kafka, provenance, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.published = 0
        self.lost = 0  # published, then lost by the broker and published again

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.published += publish_outbox(self._store, self._kafka, self._provenance)
                self.lost += verify_published(self._store, self._kafka)
            except Exception:  # the relay must outlive a broker outage; it retries next round
                log.exception("publishing the outbox failed; retrying")
            self._stop.wait(self._interval)

    def start(self) -> OutboxRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Publish what is left, and read it back once the broker had time to keep it (publishing
        again what it lost), so nothing committed is lost when the stand-in stops."""
        self._stop.set()
        self._thread.join(timeout=60)
        self.published += publish_outbox(self._store, self._kafka, self._provenance)
        newest = max((p[5] for p in self._store.unverified_placements()), default=None)
        if newest is not None:
            wait_until_settled(newest)
            lost = verify_published(self._store, self._kafka)
            self.lost += lost
            if lost:
                self.published += publish_outbox(self._store, self._kafka, self._provenance)

    def __enter__(self) -> OutboxRelay:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
