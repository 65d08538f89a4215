"""``make dev``: the Dagster UI on the no-service defaults.

Starts a local Kafka broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names one) and the stand-in Sync API
on ``ROSSMANN_SYNC_API_URL``'s port (8765 by default, unless that variable names another server),
publishing its catalogue changes to Kafka; then runs ``dagster dev`` with its home under
``ROSSMANN_DATA_DIR``, so the UI sees the same shop databases and runs as ``make day``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from rossmann_local.day import dagster_instance
from rossmann_local.domain.world import load_world
from rossmann_local.resources.kafka import KafkaResource
from rossmann_local.settings import DEFAULT_SYNC_API_URL, KAFKA_BOOTSTRAP_SERVERS, SYNC_API_URL, data_dir
from rossmann_local.streaming.broker import LocalBroker
from rossmann_local.sync_api.outbox import OutboxRelay
from rossmann_local.sync_api.server import open_seeded_store, sync_api_server

# The repo's workspace.yaml names the code location "rossmann_local", as compose does.
WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main() -> int:
    # SIGTERM (a test's teardown, a process manager) stops everything like Ctrl-C does, so the
    # broker, the stand-in and dagster dev's own processes never outlive this one.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    with ExitStack() as stack:
        if not os.environ.get(KAFKA_BOOTSTRAP_SERVERS):
            broker = stack.enter_context(LocalBroker(data_dir() / "kafka"))
            os.environ[KAFKA_BOOTSTRAP_SERVERS] = broker.bootstrap_servers
            print(f"Kafka (local broker) on {broker.bootstrap_servers}", flush=True)
        kafka = KafkaResource(bootstrap_servers=os.environ[KAFKA_BOOTSTRAP_SERVERS])
        kafka.ensure_topics()
        if not os.environ.get(SYNC_API_URL):
            store = open_seeded_store(load_world())
            port = urlsplit(DEFAULT_SYNC_API_URL).port or 8765
            server = stack.enter_context(sync_api_server(store, port=port))
            stack.callback(OutboxRelay(store, kafka.producer()).start().stop)
            print(f"Sync API stand-in on {server.url} (change the catalogue: "
                  "python -m rossmann_local.sync_api change price --product 1 --city Berlin --price 7.49)", flush=True)
        dagster_instance()  # sets DAGSTER_HOME under the data dir when it is not set
        location = ["-w", str(WORKSPACE)] if WORKSPACE.exists() else ["-m", "rossmann_local.definitions"]
        # dagster dev stops on SIGINT (and maps SIGTERM to it); a background start would inherit
        # SIGINT ignored, so the child gets the default back.
        dagster_dev = subprocess.Popen([sys.executable, "-m", "dagster", "dev", *location, *sys.argv[1:]],
                                       preexec_fn=_default_sigint)
        try:
            return dagster_dev.wait()
        except KeyboardInterrupt:
            dagster_dev.send_signal(signal.SIGINT)  # dagster dev shuts its webserver and daemon down on SIGINT
            try:
                dagster_dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dagster_dev.kill()
                dagster_dev.wait()
            return 0


if __name__ == "__main__":
    sys.exit(main())
