"""The topics of docs/contracts.md with the reference partition counts: one list for the code, the tests and
the deployment."""

from __future__ import annotations

CATEGORY_TOPIC = "local_db_upsert_category"
PRODUCT_TOPIC = "local_db_upsert_product"
PRODUCT_DESCRIPTION_TOPIC = "local_db_update_product_desc"
STOCK_TOPIC = "oltp_update_product_quantity"
# Ours: catalogue messages a shop could not use, keyed "<topic>:<partition>:<offset>" (at most one
# per source message once compacted), with the reason.
DEAD_LETTER_TOPIC = "rossmann_local_dead_letters"

CATALOGUE_TOPICS = (CATEGORY_TOPIC, PRODUCT_TOPIC, PRODUCT_DESCRIPTION_TOPIC)
PARTITIONS = {
    CATEGORY_TOPIC: 1,
    PRODUCT_TOPIC: 1,
    PRODUCT_DESCRIPTION_TOPIC: 1,
    STOCK_TOPIC: 3,
    DEAD_LETTER_TOPIC: 1,
}
