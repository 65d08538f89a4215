"""``make migration m="why"``: write the next shop-database revision from the models."""

import sys

from rossmann_local.shop_db.migrations import new_revision

new_revision(" ".join(sys.argv[1:]) or "change")
