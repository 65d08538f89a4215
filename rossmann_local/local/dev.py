"""``make dev``: the Dagster UI on the no-service defaults.

Starts the local stack (a Kafka broker unless ``KAFKA_BOOTSTRAP_SERVERS`` names one, and the
stand-in Sync API on 127.0.0.1:8765 (another free port when that one is taken, printed) unless
``ROSSMANN_SYNC_API_URL`` names another server,
publishing its catalogue changes to Kafka); then runs ``dagster dev`` with the instance under
``ROSSMANN_DATA_DIR``, so the UI sees the same shop databases, runs and sensor cursor as ``make day``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import click

from rossmann_local import commandline
from rossmann_local.local.instance import WORKSPACE, instance_home
from rossmann_local.local.processes import die_with_parent, free_port, stop_process_group
from rossmann_local.local.stack import local_stack
from rossmann_local.settings import DEFAULT_SYNC_API_URL, SYNC_API_URL, ConfigError, load_world


@click.command(name="dev", help="The Dagster UI on the no-service defaults (the local stack and dagster dev); "
               "any arguments go to dagster dev, e.g. -p 3001.",
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("dagster_dev_args", nargs=-1, type=click.UNPROCESSED)
def dev_command(dagster_dev_args: tuple[str, ...]) -> int:
    try:
        return serve(list(dagster_dev_args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return commandline.run(dev_command, argv, "rossmann dev")


def serve(dagster_dev_args: list[str]) -> int:
    home = instance_home()  # DAGSTER_HOME under the data dir when it is not set (a bad setting stops here)
    # SIGTERM (a test's teardown, a process manager) stops everything like Ctrl-C does, so the broker,
    # the stand-in and dagster dev's own processes never outlive this one. The handlers only note the
    # request: an exception raised wherever the signal lands (inside a lock, a thread join, a fork)
    # could leave the stack's own shutdown waiting on what it interrupted. A request that comes while
    # the stack starts is acted on once it is up.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT also when started in the background
        signal.signal(signum, lambda _signum, _frame: stop.set())
    usual = urlsplit(DEFAULT_SYNC_API_URL).port
    with local_stack(load_world(), sync_api_port=free_port(preferred=usual), command="make dev") as stack:
        if stack.broker is not None:
            print(f"Kafka (local broker) on {stack.bootstrap_servers}", flush=True)
        if stack.store is not None:
            url = stack.sync_api.base_url
            moved = "" if urlsplit(url).port == usual else f"{SYNC_API_URL}={url} "  # its usual port was taken
            print(f"Sync API stand-in on {url} (change the catalogue: {moved}"
                  "python -m rossmann_local.sync_api change price --product 1 --city Berlin --price 7.49)", flush=True)
        if stop.is_set():
            return 0
        # dagster dev stops on SIGINT (and maps SIGTERM to it); a background start would inherit
        # SIGINT ignored, so the child gets the default back. It runs in DAGSTER_HOME, so it does not
        # mistake the repository's dagster.yaml (compose's instance) for its own and warn about it;
        # `dagster dev` is what this project pins (dagster-dg-cli's `dg dev` is not a dependency).
        # In a session of its own, so that its webserver, daemon and code server can be stopped as one
        # group; Ctrl-C reaches it through this process.
        dagster_dev = subprocess.Popen([sys.executable, "-W", "ignore:Function `dev_command` is superseded",
                                        "-m", "dagster", "dev", "-w", str(WORKSPACE), *dagster_dev_args],
                                       env=stack.code_location_env(home), preexec_fn=die_with_parent, cwd=home,
                                       start_new_session=True)
        try:
            while not stop.wait(0.2):
                if dagster_dev.poll() is not None:
                    break
        finally:
            code = dagster_dev.poll()
            # dagster dev shuts its webserver and daemon down on SIGINT; what it leaves is killed
            stop_process_group(dagster_dev, signal.SIGINT)
        return code if code is not None else 0


if __name__ == "__main__":
    sys.exit(main())
