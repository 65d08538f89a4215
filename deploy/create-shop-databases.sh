#!/bin/sh
# Postgres init script (docker-entrypoint-initdb.d): the Dagster database and one database per shop.
set -eu
for shop_id in $(seq 1 "${ROSSMANN_SHOP_COUNT:-5}"); do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -c "CREATE DATABASE shop_${shop_id}"
done
