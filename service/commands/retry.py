"""``wbdwi retry JOB``: requeue a failed job or its dead-lettered deliveries;
``wbdwi retry --deliveries``: send the waiting deliveries now."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.commands.serve import add_config_argument, open_node_job_store

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``retry`` subcommand."""
    parser = subparsers.add_parser(
        "retry",
        help="requeue a failed job (or its dead-lettered deliveries), or send waiting "
        "deliveries now",
        description="A failed job is processed again from its stored inputs; a job whose "
        "deliveries were dead-lettered has them queued again. With --deliveries, the "
        "deliveries waiting for their next try (after a PACS outage or a rejected "
        "association, once the PACS is fixed) are sent now instead of after their back-off, "
        "also while the job is exporting. The running node picks the work up within a second.",
    )
    parser.add_argument(
        "job_id", type=int, nargs="?", metavar="JOB", help="job number (see wbdwi status)"
    )
    parser.add_argument(
        "--deliveries",
        action="store_true",
        help="send every waiting delivery now (all destinations, or the one of --destination)",
    )
    parser.add_argument(
        "--destination",
        metavar="AET@HOST:PORT",
        help="with --deliveries: only those to this destination (as wbdwi status shows it)",
    )
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Requeue; 0 on success, 2 when the job is unknown or not retryable."""
    if args.deliveries == (args.job_id is not None):
        print("wbdwi retry: give either a JOB number or --deliveries", file=sys.stderr)
        return 2
    opened = open_node_job_store(args, "retry")
    if opened is None:
        return 2
    _, store = opened
    if args.deliveries:
        try:
            count = store.retry_deliveries_now(args.destination)
        finally:
            store.close()
        target = f" to {args.destination}" if args.destination else ""
        print(
            f"{count} waiting deliveries{target} are due now"
            if count
            else f"wbdwi retry: no delivery{target} is waiting"
        )
        return 0
    try:
        record = store.retry(args.job_id)
    except KeyError:
        print(f"wbdwi retry: no job {args.job_id}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"wbdwi retry: {error}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"job {record.job_id} requeued: now {record.state.value}")
    return 0
