"""``python -m rossmann_local.sync_api [--host H] [--port P]``: the stand-in as a service (compose)."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from rossmann_local.domain.world import load_world
from rossmann_local.sync_api.app import create_app
from rossmann_local.sync_api.server import open_seeded_store, uvicorn_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = open_seeded_store(load_world())
    uvicorn.Server(uvicorn_config(create_app(store), args.host, args.port)).run()


if __name__ == "__main__":
    main()
