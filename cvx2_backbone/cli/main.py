"""The ``cvx2`` command line: one subcommand per module in ``cvx2_backbone.cli.commands``.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
and imports its heavy dependencies (torch, mmdet, mmseg, transformers) inside ``run``; only the chosen
subcommand's arguments are added, so ``cvx2 --help`` and ``cvx2 SUB --help`` answer without importing torch.
Commands raise ``cvx2_backbone.utils.usage.UsageError`` for user mistakes; ``main`` runs them in the package's
error style (exit 2 with one message, tracebacks only for internal errors or with ``--debug``: see
``cvx2_backbone.utils.usage``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from cvx2_backbone.utils.usage import HelpFormatter, add_debug_argument, run_command

COMMANDS = ("extract", "classify", "info", "convert", "export", "lr-groups", "bench", "demo", "fcmae-show")


def _module(name: str):
    return importlib.import_module(f"cvx2_backbone.cli.commands.{name.replace('-', '_')}")


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The ``cvx2`` parser; only ``commands`` get their arguments (the others are listed with their help line)."""
    parser = argparse.ArgumentParser(prog="cvx2", description="ConvNeXt V2 / V1 backbone tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = _module(name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP,
                                 formatter_class=HelpFormatter)
        if name in commands:
            module.add_arguments(command)
            add_debug_argument(command)
        command.set_defaults(_run=module.run)
    return parser


def command_main(name: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """One subcommand as a program of its own (tools/convert_checkpoint.py, tools/benchmark.py), same error style."""
    module = _module(name)
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP, formatter_class=HelpFormatter)
    module.add_arguments(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: module.run(args), prog=prog, debug=args.debug)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)  # cvx2 takes no options of its own
    parser = build_parser(commands=[chosen] if chosen else [])
    if not argv:  # argparse would say only "the following arguments are required: COMMAND"
        parser.print_usage(sys.stderr)
        print("cvx2: error: give a command:\n" + "\n".join(f"  {name:11s} {_module(name).HELP}" for name in COMMANDS)
              + "\nsee `cvx2 COMMAND --help` for its options", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    return run_command(lambda: args._run(args), prog=f"cvx2 {args.command}", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
