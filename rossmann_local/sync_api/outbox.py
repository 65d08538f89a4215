"""Publishes the stand-in's outbox to Kafka: in order, and marked published only after the broker
confirmed delivery, so a committed catalogue change is never lost (at worst sent twice, which the
shops' versioned upserts absorb)."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Producer

from rossmann_local.sync_api.store import CatalogueStore

log = logging.getLogger("rossmann_local.sync_api.outbox")


def publish_outbox(store: CatalogueStore, producer: Producer, timeout: float = 30.0) -> int:
    """Send every unpublished change; returns how many the broker confirmed."""
    rows = store.unpublished()
    confirmed: list[int] = []

    def on_delivery(error: object, _message: object, message_id: int) -> None:
        if error is None:
            confirmed.append(message_id)
        else:
            log.warning("outbox message %s not delivered: %s", message_id, error)

    for row in rows:
        producer.produce(row.topic, value=row.payload.encode(),
                         on_delivery=lambda err, msg, mid=row.message_id: on_delivery(err, msg, mid))
        producer.poll(0)
    producer.flush(timeout)
    store.mark_published(confirmed)
    return len(confirmed)


class OutboxRelay:
    """Publishes the outbox every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(self, store: CatalogueStore, producer: Producer, interval: float = 0.5) -> None:
        self._store, self._producer, self._interval = store, producer, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.published = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.published += publish_outbox(self._store, self._producer)
            except Exception:  # the relay must outlive a broker outage; it retries next round
                log.exception("publishing the outbox failed; retrying")
            self._stop.wait(self._interval)

    def start(self) -> OutboxRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.published += publish_outbox(self._store, self._producer)
