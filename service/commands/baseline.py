"""``wbdwi baseline``: mark an exam as the patient's baseline for later comparisons.

At a change of therapy (TTL case study: exam 4 became the second-line baseline) the
radiologist marks the exam that later exams should be compared with; its 95th
ADC centile then sets their yellow class bound. Marks are kept, not moved: the
baseline of an exam is the latest marked exam at or before it (see
:mod:`service.history`). ``--clear`` removes a mark.

The history store is ``<data_dir>/history.sqlite3`` of the node (the data
folder from ``--data-dir``, else the settings: ``--config``, ``WBDWI_*``,
default ``wbdwi-data``). The exam must be in it (processed by the node, or
fetched back from PACS).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.commands.serve import add_config_argument
from service.errors import HistoryError
from service.history import HISTORY_FILE, HistoryStore, PatientKey
from service.settings import SettingsError, load_settings

__all__ = ["register", "run"]


# ``wbdwi baseline --help``: plain words (the module docstring is for the API reference).
_DESCRIPTION = (
    "Mark an exam as the patient's baseline: later exams of the patient are compared "
    "with it, and its 95th ADC centile sets their yellow class bound (at a change of "
    "therapy the radiologist marks the exam of the new baseline). Marks are kept, not "
    "moved: the baseline of an exam is the latest marked exam at or before it. --clear "
    "removes a mark. The exam must be in the node's history store, "
    "DATA_DIR/history.sqlite3 (processed by the node, or fetched back from PACS); the "
    "data folder is --data-dir, else the one of the settings (--config, WBDWI_*, "
    "default ./wbdwi-data)."
)


def register(subparsers: Any) -> None:
    """Add the ``baseline`` subcommand."""
    parser = subparsers.add_parser(
        "baseline",
        help="mark an exam as the patient's baseline for later comparisons",
        description=_DESCRIPTION,
    )
    parser.add_argument("patient_id", metavar="PATIENT", help="Patient ID")
    parser.add_argument("study_uid", metavar="STUDY_UID", help="Study Instance UID of the exam")
    parser.add_argument(
        "--issuer", default="", metavar="ISSUER", help="Issuer of Patient ID (default: none)"
    )
    parser.add_argument(
        "--clear", action="store_true", help="remove the exam's baseline mark instead"
    )
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Set (or clear) the mark; 2 with the reason on stderr when it cannot be done."""
    overrides = {"node": {"data_dir": args.data_dir}} if args.data_dir else {}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except SettingsError as error:
        print(f"wbdwi baseline: {error}", file=sys.stderr)
        return 2
    path = settings.node.data_dir.resolve() / HISTORY_FILE
    if not path.exists():
        print(
            f"wbdwi baseline: no exam history at {path} (has the node processed exams here? "
            "give --data-dir)",
            file=sys.stderr,
        )
        return 2
    try:
        store = HistoryStore(path)
        patient = PatientKey(args.patient_id, args.issuer)
        if args.clear:
            store.clear_baseline(patient, args.study_uid)
        else:
            store.set_baseline(patient, args.study_uid)
        entries = store.exams(patient)
    except HistoryError as error:
        print(f"wbdwi baseline: {error}", file=sys.stderr)
        return 2
    action = "no longer a baseline" if args.clear else "marked as a baseline"
    print(f"wbdwi baseline: study {args.study_uid} {action}")
    for entry in entries:
        summary = entry.summary
        mark = "baseline" if entry.is_baseline else ""
        print(
            f"  {summary.study_date} {summary.study_time or '-':<13} {mark:<8} "
            f"{entry.source.value:<5} {summary.study_instance_uid}"
        )
    return 0
