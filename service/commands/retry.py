"""``wbdwi retry JOB``: requeue a failed job or its dead-lettered deliveries."""

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
        help="requeue a failed job (or its dead-lettered deliveries)",
        description="A failed job is processed again from its stored inputs; a job whose "
        "deliveries were dead-lettered has them queued again. The running node picks "
        "the work up within a second.",
    )
    parser.add_argument("job_id", type=int, metavar="JOB", help="job number (see wbdwi status)")
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Requeue; 0 on success, 2 when the job is unknown or not retryable."""
    opened = open_node_job_store(args, "retry")
    if opened is None:
        return 2
    _, store = opened
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
