"""``rossmann``: one command line for the whole chain, its subcommands the same as each module's
``python -m`` entry (and the Make targets): ``rossmann day|live|backfill|dev|about|deploy|contracts|sync-api``."""

from __future__ import annotations

import sys

import click

from rossmann_local import commandline
from rossmann_local.contracts import contracts_command
from rossmann_local.deploy import deploy_command
from rossmann_local.local.about import about_command
from rossmann_local.local.backfill import backfill_command
from rossmann_local.local.day import day_command
from rossmann_local.local.dev import dev_command
from rossmann_local.local.live_command import live_command
from rossmann_local.sync_api.__main__ import sync_api_command


@click.group(name="rossmann", help="The offline markets of a supermarket chain, orchestrated by Dagster.")
def rossmann() -> None:
    pass


for command in (day_command, live_command, backfill_command, dev_command, about_command, deploy_command,
                contracts_command, sync_api_command):
    rossmann.add_command(command)


def main(argv: list[str] | None = None) -> int:
    return commandline.run(rossmann, argv, "rossmann")


if __name__ == "__main__":
    sys.exit(main())
