"""What the chain's web/admin side does to the catalogue during the main command's day.

An afternoon promotion, the same every day so that re-running a day reproduces it: at opening the
regular prices and names are (re)published; at midday Berlin and Nurnberg get cheaper prices on
two products, a product gets a new description and a category a new name. Every change is a
Sync API stand-in change, so it travels through its outbox to Kafka (and to the next sync).
"""

from __future__ import annotations

from decimal import Decimal

from rossmann_local.domain.topics import PRODUCT_TOPIC
from rossmann_local.domain.world import World
from rossmann_local.resources.kafka import KafkaResource, Outgoing
from rossmann_local.sync_api.store import CatalogueStore

PROMOTIONS = ((1, "Berlin", Decimal("0.80")), (9, "Nurnberg", Decimal("0.75")))  # product, city, price factor
DESCRIBED_PRODUCT = 7
RENAMED_CATEGORY = (4, "Decor & Home")
MALFORMED_MESSAGE = b'{"product_id": "seven", "price": -1}'


def open_the_day(store: CatalogueStore, world: World) -> int:
    """Regular prices, description and category name; returns how many changes were published."""
    products = {p.product_id: p for p in world.products}
    for product_id, city, _factor in PROMOTIONS:
        regular = products[product_id].prices[city]
        store.set_price(product_id, city, regular.price, regular.discount)
    store.update_product(DESCRIBED_PRODUCT, description=products[DESCRIBED_PRODUCT].description)
    category_id, _name = RENAMED_CATEGORY
    store.update_category(category_id, name=next(c.name for c in world.categories if c.category_id == category_id))
    return len(PROMOTIONS) + 2


def start_the_promotion(store: CatalogueStore, world: World) -> int:
    products = {p.product_id: p for p in world.products}
    for product_id, city, factor in PROMOTIONS:
        regular = products[product_id].prices[city]
        store.set_price(product_id, city, (regular.price * factor).quantize(Decimal("0.01")), regular.discount)
    store.update_product(DESCRIBED_PRODUCT, description=f"{products[DESCRIBED_PRODUCT].name}: now in a larger pack")
    category_id, name = RENAMED_CATEGORY
    store.update_category(category_id, name=name)
    return len(PROMOTIONS) + 2


def inject_malformed_message(kafka: KafkaResource) -> None:
    """A message no shop can use, as a broken upstream might send: it must be dead-lettered."""
    sent = kafka.produce_confirmed([Outgoing(PRODUCT_TOPIC, MALFORMED_MESSAGE, tag="malformed")])
    if sent.unconfirmed:
        raise RuntimeError(f"the malformed demo message was not confirmed: {sent.errors[:3]}")
