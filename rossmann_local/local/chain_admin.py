"""What the chain's web/admin side does to the catalogue during the main command's day: the day's
changes (``domain.catalogue_changes``: the afternoon promotion, and a scenario's burst) made in the
Sync API stand-in, so each travels through its outbox to Kafka (and to the next sync).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rossmann_local.domain.catalogue_changes import (
    CatalogueChange,
    CategoryNameChange,
    DescriptionChange,
    PriceChange,
    message_key,
)
from rossmann_local.domain.provenance import Provenance
from rossmann_local.domain.scenario import StreamFault
from rossmann_local.domain.topics import PRODUCT_TOPIC
from rossmann_local.resources.catalogue_admin import MALFORMED_FAULT_TAG, send_fault_messages
from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.sync_api.store import CatalogueStore

MALFORMED_MESSAGE = b'{"product_id": "seven", "price": -1}'


def make_changes(store: CatalogueStore, changes: Iterable[CatalogueChange]) -> int:
    """Each change in the stand-in, in effect from its simulated time; returns how many."""
    count = 0
    for change in changes:
        if isinstance(change, PriceChange):
            store.set_price(change.product_id, change.city, change.price, change.discount, at=change.at)
        elif isinstance(change, DescriptionChange):
            store.update_product(change.product_id, at=change.at, description=change.description)
        elif isinstance(change, CategoryNameChange):
            store.update_category(change.category_id, at=change.at, name=change.name)
        count += 1
    return count


MALFORMED_TAG = MALFORMED_FAULT_TAG  # what the demo calls its deliberately malformed message


def inject_malformed_message(kafka: KafkaResource, provenance: Provenance) -> None:
    """A message no shop can use, as a broken upstream might send: it must be dead-lettered."""
    sent = kafka.produce_confirmed([Outgoing(PRODUCT_TOPIC, MALFORMED_MESSAGE, tag=MALFORMED_TAG,
                                             key=MALFORMED_TAG.encode(),  # the compacted topic takes keyed records
                                             headers=provenance.headers("demo", None, fault=MALFORMED_TAG))])
    if sent.unconfirmed:
        raise RuntimeError(f"the malformed demo message was not confirmed: {sent.errors[:3]}")


def inject_stream_faults(store: CatalogueStore, kafka: KafkaResource, faults: Sequence[StreamFault],
                         provenance: Provenance) -> int:
    """Deliver the scenario's faults on the stream, after the chain published the day's messages: each
    fault's message (found by topic, key and effective time in the stand-in's outbox) delivered
    again, or spoiled (``catalogue_admin.fault_messages``). Returns how many the broker confirmed;
    all of them, or it raises."""
    if not faults:
        return 0
    first, last = min(f.change.at for f in faults), max(f.change.at for f in faults)
    originals = {(topic, message_key(topic, payload), at): payload
                 for topic, payload, at in store.messages_effective_between(first, last)}
    return send_fault_messages(kafka, faults, originals, provenance)
