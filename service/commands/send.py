"""``wbdwi send``: send DICOM files to a remote SCP with C-STORE."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicom_node.assembly.dicom_files import find_dicom_files
from dicom_node.errors import SendError
from dicom_node.scu.mpps import complete_mpps, create_mpps, performed_exam
from dicom_node.scu.send import DEFAULT_CALLING_AET, Destination, send_files

__all__ = ["add_destination_arguments", "collect_files", "register", "run"]

_SHOWN_FAILURES = 20


def add_destination_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--host/--port/--aet/--calling-aet/--timeout`` options (shared with later commands)."""
    parser.add_argument("--host", required=True, help="peer host name or address")
    parser.add_argument("--port", type=int, required=True, help="peer port")
    parser.add_argument("--aet", required=True, help="peer (called) AE title")
    parser.add_argument("--calling-aet", default=DEFAULT_CALLING_AET, help="our AE title")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (ACSE/DIMSE/network)")


def register(subparsers: Any) -> None:
    """Add the ``send`` subcommand."""
    parser = subparsers.add_parser(
        "send",
        help="send DICOM files (folders are searched recursively) with C-STORE",
        description="Send every DICOM file under the given folders/files to a C-STORE SCP.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="DIR", help="folders or files")
    add_destination_arguments(parser)
    parser.add_argument(
        "--mpps",
        action="store_true",
        help="act as the scanner: MPPS N-CREATE (IN PROGRESS) before sending, "
        "N-SET COMPLETED listing every instance after",
    )
    parser.set_defaults(func=run)


def collect_files(paths: list[Path]) -> list[Path]:
    """Files given directly, plus every DICOM file under the given folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += find_dicom_files(path)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return files


def run(args: argparse.Namespace) -> int:
    """Send; print a summary; 0 when every file was stored, 1 otherwise."""
    try:
        files = collect_files(args.paths)
    except FileNotFoundError as exc:
        print(f"wbdwi send: {exc}", file=sys.stderr)
        return 2
    if not files:
        print(
            f"wbdwi send: no DICOM files under {', '.join(map(str, args.paths))}", file=sys.stderr
        )
        return 1
    destination = Destination(
        host=args.host,
        port=args.port,
        called_aet=args.aet,
        calling_aet=args.calling_aet,
        timeout_s=args.timeout,
    )
    try:
        exam = performed_exam(files) if getattr(args, "mpps", False) else None
        mpps_uid = create_mpps(destination, exam) if exam is not None else None
        report = send_files(files, destination)
        if exam is not None and mpps_uid is not None:
            complete_mpps(destination, mpps_uid, exam)
            print(f"MPPS {mpps_uid} COMPLETED ({exam.instance_count} instance(s))")
    except SendError as exc:
        print(f"wbdwi send: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    for outcome in report.failed[:_SHOWN_FAILURES]:
        print(f"  failed: {outcome.path}: {outcome.detail}", file=sys.stderr)
    if len(report.failed) > _SHOWN_FAILURES:
        print(f"  ... and {len(report.failed) - _SHOWN_FAILURES} more", file=sys.stderr)
    return 0 if report.ok else 1
