"""The shop's unit of work: plain functions of (world, resources, shop, shift) that return typed
outcomes: sync the cache, take the deliveries, sell the shift, send the stock levels, send the
reports, apply a range of catalogue messages. The Dagster assets only walk their partitions and
turn these outcomes into metadata and check results."""
