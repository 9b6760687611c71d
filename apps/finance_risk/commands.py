"""`verticals finance ...`: the finance-risk commands (the `verticals` command adds them).

Arguments are parsed here and handed to the modules that do the work; each subcommand adds its
parser in `add_commands` and its handler to `HANDLERS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_commands(commands: argparse._SubParsersAction) -> None:
    finance = commands.add_parser(
        "finance", help="finance risk: train and update the fraud model, the dashboard"
    )
    finance.add_subparsers(dest="finance_command", required=True)


HANDLERS: dict[str, Callable[[argparse.Namespace], None]] = {}


def run(args: argparse.Namespace) -> None:
    HANDLERS[args.finance_command](args)
