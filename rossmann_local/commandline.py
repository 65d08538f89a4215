"""The package's command lines on click: each module's ``main(argv)`` runs its click command and
returns the exit code (a usage error prints click's message and returns 2, as argparse did);
``rossmann`` (``rossmann_local.cli``) groups them."""

from __future__ import annotations

import sys
from datetime import date
from typing import Any

import click


def run(command: click.Command, argv: list[str] | None, prog: str) -> int:
    """The command on ``argv`` (default: the process's arguments); its return value as the exit code."""
    try:
        code = command.main(args=sys.argv[1:] if argv is None else argv, prog_name=prog, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    return int(code or 0)


class IsoDate(click.ParamType):
    """A day as YYYY-MM-DD."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a day like 2026-06-01", param, ctx)


ISO_DATE = IsoDate()
