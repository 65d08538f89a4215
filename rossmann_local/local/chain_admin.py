"""What the chain's web/admin side does to the catalogue during the main command's day.

An afternoon promotion, the same every day: from the day's second shift Berlin and Nurnberg get
cheaper prices on two products, a product gets a new description and a category a new name; the
next morning the regular ones are back. Each change carries the simulated time it takes effect, so
it is part of that day's history: re-running any day, in any order, sells at the same prices. Every
change is a Sync API stand-in change, so it travels through its outbox to Kafka (and to the next
sync).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from rossmann_local.domain.shifts import shifts_of_day
from rossmann_local.domain.topics import PRODUCT_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.sync_api.store import CatalogueStore

PROMOTIONS = ((1, "Berlin", Decimal("0.80")), (9, "Nurnberg", Decimal("0.75")))  # product, city, price factor
DESCRIBED_PRODUCT = 7
RENAMED_CATEGORY = (4, "Decor & Home")
MALFORMED_MESSAGE = b'{"product_id": "seven", "price": -1}'


def _publish(store: CatalogueStore, world: World, at: datetime, promoted: bool) -> int:
    """The promotion's prices, description and category name (or the regular ones), in effect from
    ``at``; returns how many changes were published."""
    products = {p.product_id: p for p in world.products}
    for product_id, city, factor in PROMOTIONS:
        regular = products[product_id].prices[city]
        price = (regular.price * factor).quantize(Decimal("0.01")) if promoted else regular.price
        store.set_price(product_id, city, price, regular.discount, at=at)
    described = products[DESCRIBED_PRODUCT]
    store.update_product(DESCRIBED_PRODUCT, at=at, description=f"{described.name}: now in a larger pack"
                         if promoted else described.description)
    category_id, name = RENAMED_CATEGORY
    store.update_category(category_id, at=at, name=name if promoted else next(
        c.name for c in world.categories if c.category_id == category_id))
    return len(PROMOTIONS) + 2


def afternoon_promotion(store: CatalogueStore, world: World, day: date) -> int:
    """The day's promotion, in effect from its second shift's start until the next day opens: part of
    that day's catalogue history, so the day can be run (and re-run) in any order."""
    afternoon = shifts_of_day(world, day)[1].start
    next_morning = shifts_of_day(world, day + timedelta(days=1))[0].start
    return _publish(store, world, afternoon, promoted=True) + _publish(store, world, next_morning, promoted=False)


MALFORMED_TAG = "malformed"  # what the demo calls its deliberately malformed message


def inject_malformed_message(kafka: KafkaResource) -> None:
    """A message no shop can use, as a broken upstream might send: it must be dead-lettered."""
    sent = kafka.produce_confirmed([Outgoing(PRODUCT_TOPIC, MALFORMED_MESSAGE, tag=MALFORMED_TAG)])
    if sent.unconfirmed:
        raise RuntimeError(f"the malformed demo message was not confirmed: {sent.errors[:3]}")
