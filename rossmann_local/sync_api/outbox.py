"""Publishes the stand-in's outbox to Kafka: in order, and marked published only after the broker
confirmed delivery, so a committed catalogue change is never lost (at worst sent twice, which the
shops' versioned upserts absorb)."""

from __future__ import annotations

import logging
import threading

from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.sync_api.store import CatalogueStore

log = logging.getLogger("rossmann_local.sync_api.outbox")
# The stand-in is a service of its own: its producer is not the shops' (see KafkaResource.shared_producer).
OUTBOX_CLIENT = "rossmann-local-sync-api-outbox"


def publish_outbox(store: CatalogueStore, kafka: KafkaResource, timeout: float = 30.0) -> int:
    """Send every unpublished change; returns how many the broker confirmed."""
    outcome = kafka.produce_confirmed(
        (Outgoing(row.topic, row.payload.encode(), tag=row.message_id) for row in store.unpublished()), timeout,
        client=OUTBOX_CLIENT)
    for error in outcome.errors[:3]:
        log.warning("%s outbox messages not delivered: %s", outcome.unconfirmed, error)
    store.mark_published(outcome.confirmed)
    return len(outcome.confirmed)


class OutboxRelay:
    """Publishes the outbox every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(self, store: CatalogueStore, kafka: KafkaResource, interval: float = 0.5) -> None:
        self._store, self._kafka, self._interval = store, kafka, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.published = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.published += publish_outbox(self._store, self._kafka)
            except Exception:  # the relay must outlive a broker outage; it retries next round
                log.exception("publishing the outbox failed; retrying")
            self._stop.wait(self._interval)

    def start(self) -> OutboxRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.published += publish_outbox(self._store, self._kafka)

    def __enter__(self) -> OutboxRelay:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
