"""``wbdwi deliveries cancel DEST``: give up the waiting deliveries to a destination."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

import structlog

from service.commands.serve import add_config_argument, open_node_job_store

__all__ = ["register", "run"]

LOGGER = structlog.get_logger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``deliveries`` subcommand."""
    parser = subparsers.add_parser(
        "deliveries",
        help="cancel the waiting deliveries to a destination",
        description="For a destination that was removed from the settings or will never "
        "come back: its waiting deliveries are cancelled (wbdwi status lists them as "
        "cancelled), so their jobs end as done and retention can free their inputs. "
        "Files the destination already acknowledged are not touched. To send waiting "
        "deliveries now instead, use wbdwi retry --deliveries.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    cancel = actions.add_parser(
        "cancel",
        help="cancel the waiting deliveries to DEST",
        description="Cancel every waiting delivery to DEST (as wbdwi status shows it).",
    )
    cancel.add_argument(
        "destination",
        metavar="DEST",
        help="the destination, AET@HOST:PORT as wbdwi status shows it",
    )
    add_config_argument(cancel)
    cancel.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Cancel; 0 when something was cancelled, 1 when nothing waited for DEST, 2 on errors."""
    opened = open_node_job_store(args, "deliveries")
    if opened is None:
        return 2
    _, store = opened
    who = f"{getpass.getuser()} (wbdwi deliveries cancel)"
    try:
        count = store.cancel_deliveries(args.destination, who)
    finally:
        store.close()
    if not count:
        print(f"wbdwi deliveries: nothing is waiting for {args.destination}", file=sys.stderr)
        return 1
    LOGGER.warning("deliveries_cancelled", destination=args.destination, count=count, by=who)
    print(f"{count} waiting deliveries to {args.destination} cancelled")
    return 0
