"""``make dev``: the Dagster UI on the no-service defaults.

Starts the stand-in Sync API on ``ROSSMANN_SYNC_API_URL``'s port (8765 by default) unless that
variable names another server, then runs ``dagster dev`` with its home under ``ROSSMANN_DATA_DIR``,
so the UI sees the same shop databases and runs as ``make day``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from urllib.parse import urlsplit

from rossmann_local.day import dagster_instance
from rossmann_local.domain.world import load_world
from rossmann_local.settings import DEFAULT_SYNC_API_URL, SYNC_API_URL
from rossmann_local.sync_api.server import open_seeded_store, sync_api_server


def main() -> int:
    with ExitStack() as stack:
        if not os.environ.get(SYNC_API_URL):
            port = urlsplit(DEFAULT_SYNC_API_URL).port or 8765
            server = stack.enter_context(sync_api_server(open_seeded_store(load_world()), port=port))
            print(f"Sync API stand-in on {server.url}", flush=True)
        dagster_instance()  # sets DAGSTER_HOME under the data dir when it is not set
        command = [sys.executable, "-m", "dagster", "dev", "-m", "rossmann_local.definitions", *sys.argv[1:]]
        try:
            return subprocess.call(command)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
