"""``wbdwi phantom``: write a numerical phantom exam as a scanner would send it."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from dicom_node.simulator.scanner import SeriesSplit, Vendor, write_exam
from processing.phantom import PRESETS, PhantomVariation, make_phantom, write_truth
from processing.phantom_variation import DIFFUSE_EXTENTS, EXAM_STARTS

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
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="small",
        help="exam size: small (3 stations, 64 x 64; default), reference (5 stations, "
        "128 x 128) or large (6 stations, 256 x 256)",
    )
    parser.add_argument(
        "--vendor",
        choices=[v.value for v in Vendor],
        default=Vendor.STANDARD.value,
        help="header flavour: standard DICOM b-values (default), a vendor's private tags, "
        "or Enhanced MR (multi-frame)",
    )
    parser.add_argument(
        "--split",
        choices=[s.value for s in SeriesSplit],
        default=SeriesSplit.STATION.value,
        help="one series per station (default), per station and b-value, or one series "
        "for the whole body",
    )
    parser.add_argument(
        "--b-values", type=_b_values, default=None, help="s/mm2, e.g. 50,600,900 (preset's default)"
    )
    parser.add_argument(
        "--snr", type=float, default=40.0, help="muscle SNR at the lowest b; 0 = none"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed: noise, patient position, UIDs (default 0)"
    )
    parser.add_argument(
        "--patient-id", default="PHANTOM-0001", help="Patient ID written (default PHANTOM-0001)"
    )
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
    _add_variation_arguments(parser)
    parser.set_defaults(func=run)


def _add_variation_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for :class:`processing.phantom.PhantomVariation` (unset = the preset's default)."""
    group = parser.add_argument_group(
        "patient and protocol variations",
        "What differs between real patients and scanners; each flag left out keeps the default.",
    )
    number: dict[str, Any] = {"type": float, "default": None}
    group.add_argument(
        "--marrow-brightness",
        metavar="RATIO",
        help="normal spine and pelvis marrow at b=1000 as a multiple of muscle at b=1000 "
        "(adults 0.8-5, on average about 3; default about 1.1)",
        **number,
    )
    group.add_argument(
        "--marrow-adc",
        metavar="UM2S",
        help="ADC of normal marrow, um2/s (250-650; default 400)",
        **number,
    )
    group.add_argument(
        "--snr-high-b",
        metavar="SNR",
        help="muscle SNR at the highest b-value instead of --snr at the lowest (8-80 is usual)",
        **number,
    )
    group.add_argument(
        "--diffuse",
        choices=list(DIFFUSE_EXTENTS),
        default=None,
        help="fill this marrow with diffuse disease (MY-RADS diffuse pattern); it counts in the "
        "truth's total lesion volume",
    )
    group.add_argument(
        "--diffuse-adc", metavar="UM2S", help="ADC of the diffuse disease (default 850)", **number
    )
    group.add_argument(
        "--diffuse-contrast",
        metavar="RATIO",
        help="diffuse disease at b=1000 as a multiple of normal marrow (default 2)",
        **number,
    )
    group.add_argument(
        "--lesion-adc-scale", metavar="F", help="multiply every lesion's ADC by F", **number
    )
    group.add_argument(
        "--lesion-contrast",
        metavar="F",
        help="multiply every lesion's signal by F (below 1: fainter lesions)",
        **number,
    )
    group.add_argument(
        "--slice-mm", metavar="MM", help="slice thickness instead of the preset's (4-8)", **number
    )
    group.add_argument(
        "--pixel-mm",
        metavar="MM",
        help="in-plane pixel size instead of the preset's (1.5-4)",
        **number,
    )
    group.add_argument(
        "--body-scale", metavar="F", help="patient size, 0.8-1.25 (1 = the average)", **number
    )
    group.add_argument(
        "--arms", action="store_true", help="arms beside the trunk, inside the field of view"
    )
    group.add_argument(
        "--start",
        choices=list(EXAM_STARTS),
        default="vertex",
        help="where the exam begins: above the vertex (default) or at the skull base",
    )
    group.add_argument(
        "--neck-scale",
        metavar="F",
        help="neck length as a multiple of the average (0.6 much shorter, 1.4 much longer)",
        **number,
    )


def _variation(args: argparse.Namespace) -> PhantomVariation:
    return PhantomVariation(
        marrow_b1000_ratio=args.marrow_brightness,
        marrow_adc_um2s=args.marrow_adc,
        snr_high_b=args.snr_high_b,
        diffuse_extent=args.diffuse,
        diffuse_adc_um2s=args.diffuse_adc,
        diffuse_contrast=args.diffuse_contrast,
        lesion_adc_scale=args.lesion_adc_scale,
        lesion_s0_scale=args.lesion_contrast,
        slice_mm=args.slice_mm,
        pixel_mm=args.pixel_mm,
        body_scale=args.body_scale,
        arms=args.arms,
        exam_start=args.start,
        neck_scale=args.neck_scale,
    )


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
            variation=_variation(args),
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
