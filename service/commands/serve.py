"""``wbdwi serve``: run the node (DICOM listener, job worker, exporter, health endpoints).

Settings come from defaults < ``--config`` TOML (or ``WBDWI_CONFIG``) <
``WBDWI_<SECTION>_<KEY>`` environment < these flags. With no configuration at
all the node listens on 11112 as AE ``WBDWI`` with its data in ``./wbdwi-data``.
SIGTERM or SIGINT stops it gracefully.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

from processing.backend import BackendUnavailableError
from service.data_dir_lock import DataDirLockedError
from service.jobstore import JobStoreError, SqliteJobStore
from service.logging import configure_logging
from service.settings import Settings, SettingsError, load_settings

__all__ = ["add_config_argument", "register", "run", "settings_from_args"]

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


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--data-dir DIR`` (shared by status and retry)."""
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="data folder (spool, jobs)")


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
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    parser.add_argument("--port", type=int, help="DICOM port (default 11112)")
    parser.add_argument("--aet", help="our AE title (default WBDWI)")
    parser.add_argument("--bind", help="listen address (default 0.0.0.0)")
    parser.add_argument("--quiet-seconds", type=float, help="study complete after N s quiet")
    parser.add_argument("--mpps-grace-seconds", type=float, help="wait after MPPS COMPLETED")
    parser.add_argument(
        "--destination",
        action="append",
        metavar="AET@HOST:PORT",
        help="result destination (repeatable; replaces the configured list)",
    )
    parser.add_argument("--http-port", type=int, help="health/metrics port (0 = off)")
    parser.add_argument("--device", choices=["auto", "gpu", "cpu"], help="processing device")
    parser.add_argument(
        "--calling-ae-allow",
        action="append",
        metavar="AET",
        help="allowed calling AE (repeatable; default any)",
    )
    parser.add_argument("--no-fsync", action="store_true", help="do not fsync received files")
    parser.add_argument("--log-format", choices=["auto", "json", "console"])
    parser.set_defaults(func=run)


def _flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    table = {
        "data_dir": ("node", "data_dir"),
        "port": ("node", "port"),
        "aet": ("node", "ae_title"),
        "bind": ("node", "bind_address"),
        "http_port": ("node", "http_port"),
        "device": ("node", "device"),
        "quiet_seconds": ("completion", "quiet_seconds"),
        "mpps_grace_seconds": ("completion", "mpps_grace_seconds"),
        "destination": ("export", "destinations"),
        "calling_ae_allow": ("receive", "calling_ae_allow"),
        "log_format": ("logging", "format"),
    }
    overrides: dict[str, dict[str, Any]] = {}
    for attribute, (section, key) in table.items():
        value = getattr(args, attribute, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    if getattr(args, "no_fsync", False):
        overrides.setdefault("receive", {})["fsync"] = False
    return overrides


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load the settings with this command's flags on top (raises SettingsError)."""
    return load_settings(args.config, overrides=_flag_overrides(args))


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; 2 on a settings error, 1 when the node cannot start.

    Every start-up failure is one line on standard error, without a traceback.
    """
    try:
        settings = settings_from_args(args)
        configure_logging(settings.logging)
    except (SettingsError, ValueError) as error:
        print(f"wbdwi serve: {error}", file=sys.stderr)
        return 2
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
