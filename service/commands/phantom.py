"""``wbdwi phantom``: write a numerical phantom exam as a scanner would send it."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from dicom_node.scanner import SeriesSplit, Vendor, write_exam
from processing.phantom import PRESETS, make_phantom, write_truth

__all__ = ["register", "run"]


def _b_values(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"b-values must be numbers like 50,600,900: {exc}"
        ) from exc
    if len(values) < 2:
        raise argparse.ArgumentTypeError("give at least two b-values, e.g. 50,600,900")
    return values


def _study_date(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, "%Y%m%d").replace(hour=8, minute=30)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"study date must be YYYYMMDD: {exc}") from exc


def register(subparsers: Any) -> None:
    """Add the ``phantom`` subcommand."""
    parser = subparsers.add_parser(
        "phantom",
        help="write a whole-body DWI phantom exam (DICOM files + truth)",
        description=(
            "Write a numerical whole-body DWI phantom as the DICOM files a scanner would send "
            "(DIR/dicom) and its truth (DIR/truth: truth.json, truth.npz)."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument(
        "--vendor", choices=[v.value for v in Vendor], default=Vendor.STANDARD.value
    )
    parser.add_argument(
        "--split", choices=[s.value for s in SeriesSplit], default=SeriesSplit.STATION.value
    )
    parser.add_argument(
        "--b-values", type=_b_values, default=None, help="s/mm2, e.g. 50,600,900 (preset's default)"
    )
    parser.add_argument(
        "--snr", type=float, default=40.0, help="muscle SNR at the lowest b; 0 = none"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patient-id", default="PHANTOM-0001")
    parser.add_argument(
        "--scenario", default="baseline", help="baseline, response, partial, progression, stable"
    )
    parser.add_argument(
        "--study-date",
        type=_study_date,
        default=None,
        metavar="YYYYMMDD",
        help="default: 2026-01-05 for baseline, 13 weeks later otherwise",
    )
    parser.add_argument(
        "--no-distractors", action="store_true", help="leave out the scanner ADC and T1 series"
    )
    parser.add_argument(
        "--private-block",
        type=lambda t: int(t, 0),
        default=0x10,
        help="private block the vendor creators reserve (0x10..0xFF; default 0x10)",
    )
    parser.add_argument(
        "--ge-b-value-offset", action="store_true", help="GE: write b + 1e9 as some versions do"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the phantom, write DICOM and truth; print where."""
    try:
        phantom = make_phantom(
            args.preset,
            b_values=args.b_values,
            snr=args.snr,
            seed=args.seed,
            patient_id=args.patient_id,
            scenario=args.scenario,
        )
        written = write_exam(
            phantom,
            args.out / "dicom",
            vendor=args.vendor,
            split=args.split,
            distractors=not args.no_distractors,
            private_block=args.private_block,
            ge_b_value_offset=args.ge_b_value_offset,
            study_datetime=args.study_date,
        )
    except ValueError as exc:
        print(f"wbdwi phantom: {exc}", file=sys.stderr)
        return 2
    write_truth(phantom, args.out / "truth")
    print(
        f"wrote {len(written)} DICOM file(s) to {args.out / 'dicom'} "
        f"({args.vendor}, split {args.split}, preset {args.preset}, "
        f"b={','.join(f'{b:g}' for b in phantom.b_values)}) and truth to {args.out / 'truth'}"
    )
    return 0
