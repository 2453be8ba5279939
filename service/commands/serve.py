"""``wbdwi serve``: run the node (DICOM listener, job worker, exporter, health endpoints).

Settings come from defaults < ``--config`` TOML (or ``WBDWI_CONFIG``) <
``WBDWI_<SECTION>_<KEY>`` environment < these flags. With no configuration at
all the node listens on 11112 as AE ``WBDWI`` with its data in ``./wbdwi-data``.
SIGTERM or SIGINT stops it gracefully.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from processing.errors import BackendUnavailableError
from service.commands.worker import add_worker_arguments, worker_options
from service.errors import DataDirLockedError, JobStoreError
from service.jobstore import SqliteJobStore
from service.logging import configure_logging
from service.settings import Settings, SettingsError, load_settings
from service.settings.flags import DATA_DIR_FLAG, SERVE_FLAGS, add_setting_flags, flag_overrides

__all__ = ["ROLES", "add_config_argument", "register", "run", "settings_from_args"]

#: ``--role``: the whole node, the receiver of the celery backend, or one of its workers.
ROLES = ("all", "receiver", "worker")

# What stops a node from starting, each with a message that says why: the data
# folder is another node's, the job store cannot be opened, the device or a port
# or file is not available.
_START_ERRORS = (
    BackendUnavailableError,
    DataDirLockedError,
    JobStoreError,
    sqlite3.Error,
    OSError,
)


# ``wbdwi serve --help``: plain words (the module docstring is for the API reference).
_DESCRIPTION = (
    "Run the node: the DICOM listener, the job worker, the exporter and the HTTP "
    "endpoints. Settings come from the defaults, then the --config TOML file (or the "
    "file named by WBDWI_CONFIG), then the WBDWI_<SECTION>_<KEY> environment "
    "variables, then these flags; each overrides the one before. With no "
    "configuration at all the node listens on port 11112 as AE title WBDWI and "
    "keeps its data in ./wbdwi-data. SIGTERM or SIGINT (Ctrl-C) stops it "
    "gracefully. Every setting: wbdwi settings --markdown."
)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--data-dir DIR`` (shared by status and retry)."""
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    add_setting_flags(parser, (DATA_DIR_FLAG,))


def open_node_job_store(
    args: argparse.Namespace, command: str, *, missing_hint: str = ""
) -> tuple[Settings, SqliteJobStore] | None:
    """The settings (``--config``, ``--data-dir``) and the node's existing job store.

    Prints why not to stderr as ``wbdwi COMMAND: ...`` and returns ``None`` when the
    settings do not load or there is no job store in the data folder.
    """
    from service.node import JOB_STORE_FILE

    overrides = {"node": {"data_dir": args.data_dir}} if args.data_dir else {}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except SettingsError as error:
        print(f"wbdwi {command}: {error}", file=sys.stderr)
        return None
    path = settings.node.data_dir.resolve() / JOB_STORE_FILE
    if not path.exists():
        print(f"wbdwi {command}: no job store at {path}{missing_hint}", file=sys.stderr)
        return None
    return settings, SqliteJobStore(path)


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="run the DICOM node",
        description=_DESCRIPTION,
    )
    add_config_argument(parser)
    add_setting_flags(parser, SERVE_FLAGS)
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="all: the whole node on this host (default); with [queue] backend = celery: "
        "receiver: DICOM, ledger and export, jobs to RabbitMQ; worker: one processing worker "
        "(as wbdwi worker)",
    )
    add_worker_arguments(parser)
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load the settings with this command's flags on top (raises SettingsError)."""
    return load_settings(args.config, overrides=flag_overrides(args, (DATA_DIR_FLAG, *SERVE_FLAGS)))


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; 2 on a settings error, 1 when the node cannot start.

    Every start-up failure is one line on standard error, without a traceback.
    """
    try:
        settings = settings_from_args(args)
        configure_logging(settings.logging)
        role = getattr(args, "role", "all")
        if role != "all" and settings.queue.backend != "celery":
            raise ValueError(
                f'--role {role} needs [queue] backend = "celery"; with "sqlite" the node '
                "runs its own jobs (--role all)"
            )
        if role == "worker":
            options = worker_options(args, settings)
    except (SettingsError, ValueError) as error:
        print(f"wbdwi serve: {error}", file=sys.stderr)
        return 2
    if role == "worker":
        from service.queue_celery.worker import run_worker

        run_worker(options)
        return 0
    local_workers = settings.node.workers if settings.queue.backend == "celery" else 0
    if role == "all" and local_workers:
        return _run_with_local_workers(args, settings, local_workers)
    return _run_node(settings)


def _run_with_local_workers(args: argparse.Namespace, settings: Settings, count: int) -> int:
    """The receiver here plus ``count`` ``wbdwi worker`` processes (``--role all``, celery)."""
    command = [sys.executable, "-m", "service.cli", "worker"]
    if args.config:
        command += ["--config", str(args.config)]
    command += ["--device", settings.node.device.value]
    children = [
        subprocess.Popen([*command, "--name", f"wbdwi-local{index + 1}@{socket.gethostname()}"])
        for index in range(count)
    ]
    try:
        return _run_node(settings)
    finally:
        for child in children:
            child.terminate()  # warm shutdown: the current job finishes first
        for child in children:
            try:
                child.wait(timeout=settings.node.shutdown_grace_seconds)
            except subprocess.TimeoutExpired:
                child.kill()  # its job goes back to the queue


def _run_node(settings: Settings) -> int:
    from service.node import Node

    stop = threading.Event()

    def _request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    try:
        node = Node(settings)
    except _START_ERRORS as error:
        print(f"wbdwi serve: cannot start: {error}", file=sys.stderr)
        return 1
    try:
        node.start()
    except _START_ERRORS as error:
        print(f"wbdwi serve: cannot start: {error}", file=sys.stderr)
        node.stop()
        return 1
    while not stop.wait(1.0):
        pass
    node.stop()
    return 0
