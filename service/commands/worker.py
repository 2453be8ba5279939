"""``wbdwi worker``: one processing worker of the celery backend (``[queue] backend = "celery"``).

The worker takes jobs from RabbitMQ (``[queue] broker_url``), one at a time,
from the queue of its device class (``--queue gpu`` or ``cpu``), runs each on
its device (``--device``, ``--gpu N`` for one GPU of a multi-GPU host) and
reports the outcome to the receiver, which sends the results to the PACS.
Inputs and results are read and written on the shared storage: set
``[queue] storage_root`` to where this host mounts it (jobs name their files
relative to the share), or mount it at the same path as on the receiver.
Run one worker per GPU. SIGTERM finishes the current job, then stops; a
worker that dies mid-job leaves its job to another worker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicom_node.package_version import installed_version
from service.logging import configure_logging
from service.settings import Settings, SettingsError, load_settings

__all__ = ["add_worker_arguments", "register", "run", "worker_options"]


# ``wbdwi worker --help``: plain words (the module docstring is for the API reference).
_DESCRIPTION = (
    'Run one processing worker of the celery backend (queue.backend = "celery"). The '
    "worker takes jobs from RabbitMQ (queue.broker_url), one at a time, from the queue "
    "of its device class (--queue gpu or cpu), runs each on its device (--device; --gpu "
    "N for one GPU of a multi-GPU host) and reports the outcome to the receiver, which "
    "sends the results to the PACS. Inputs and results are read and written on the "
    "shared storage: queue.storage_root is where this host mounts it (or mount it at the "
    "same path as on the receiver and leave storage_root unset). "
    "Run one worker per GPU. SIGTERM finishes the current job, then stops; a worker "
    "that dies mid-job leaves its job to another worker."
)


def register(subparsers: Any) -> None:
    """Add the ``worker`` subcommand."""
    parser = subparsers.add_parser(
        "worker",
        help="run one processing worker of the celery backend",
        description=_DESCRIPTION,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    parser.add_argument(
        "--device",
        choices=("auto", "gpu", "cpu"),
        default=None,
        help="what the jobs run on here (default: node.device)",
    )
    add_worker_arguments(parser)
    parser.set_defaults(func=run)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--queue``, ``--gpu``, ``--name`` (shared with ``wbdwi serve --role worker``)."""
    parser.add_argument(
        "--queue",
        choices=("gpu", "cpu"),
        default=None,
        help="device class of the jobs taken (default: cpu when --device cpu, else gpu)",
    )
    parser.add_argument(
        "--gpu", type=int, metavar="N", default=None, help="GPU index (CUDA_VISIBLE_DEVICES=N)"
    )
    parser.add_argument("--name", default="", help="worker name (default wbdwi-QUEUE[N]@HOST-PID)")


def worker_options(args: argparse.Namespace, settings: Settings) -> Any:
    """The :class:`~service.queue_celery.worker.WorkerOptions` of the settings and flags.

    Raises ``ValueError`` with a message for the user.
    """
    from service.queue_celery.worker import WorkerOptions

    if settings.queue.backend != "celery":
        raise ValueError(
            '[queue] backend is "sqlite": the node runs its own jobs; set backend = "celery" '
            "(and broker_url) on the receiver and every worker to process on other hosts"
        )
    if args.gpu is not None and args.gpu < 0:
        raise ValueError(f"--gpu must be a GPU index >= 0, got {args.gpu}")
    device = getattr(args, "device", None) or settings.node.device.value
    queue = args.queue or ("cpu" if device == "cpu" else "gpu")
    return WorkerOptions(
        broker_url=settings.queue.broker_url,
        delivery_limit=settings.queue.delivery_limit,
        queue=queue,
        device=device,
        software_version=installed_version(),
        gpu=args.gpu,
        name=args.name,
        storage_root=str(settings.queue.storage_root or ""),
    )


def run(args: argparse.Namespace) -> int:
    """Run one worker until SIGTERM; 2 on a settings error."""
    try:
        settings = load_settings(args.config)
        configure_logging(settings.logging)
        options = worker_options(args, settings)
    except (SettingsError, ValueError) as error:
        print(f"wbdwi worker: {error}", file=sys.stderr)
        return 2
    from service.queue_celery.worker import run_worker

    run_worker(options)
    return 0
