"""The ``wbdwi`` command line.

Each subcommand lives in its own module under :mod:`service.commands` and
exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed namespace and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from dicom_node.package_version import installed_version

__all__ = ["build_parser", "main"]

# Order is the order shown by ``wbdwi --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "phantom",
    "send",
    "inspect",
    "process",
    "baseline",
    "serve",
    "worker",
    "status",
    "echo",
    "retry",
    "deliveries",
    "settings",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbdwi",
        description="Whole-body DWI node: ADC, computed high-b, tumour load, DICOM results.",
    )
    parser.add_argument("--version", action="version", version=f"wbdwi {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"service.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`wbdwi status | head`): no traceback. Point stdout at
        # devnull so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
