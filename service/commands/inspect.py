"""``wbdwi inspect``: assemble the DWI exam in a folder and print what was found, as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dicom_node.assembly.assemble import assemble_exam
from dicom_node.assembly.dicom_files import find_dicom_files
from dicom_node.errors import AssemblyError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``inspect`` subcommand."""
    parser = subparsers.add_parser(
        "inspect",
        help="assemble the DWI exam in a folder and print its summary as JSON",
        description=(
            "Read every DICOM file under DIR, assemble the whole-body DWI exam and print "
            "b-values, shape, spacing, stations, the series used and the series ignored (with "
            "reasons). Bad input: the reason on stderr, exit status 2."
        ),
    )
    parser.add_argument(
        "folder", type=Path, metavar="DIR", help="folder with the exam's DICOM files"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the summary JSON; 2 with the reason on stderr when the input is not usable."""
    try:
        files = find_dicom_files(args.folder)
        assembled = assemble_exam(files)
    except NotADirectoryError as exc:
        print(f"wbdwi inspect: {exc}", file=sys.stderr)
        return 2
    except AssemblyError as exc:
        print(f"wbdwi inspect: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(assembled.summary(), indent=2))
    return 0
