"""The assembly errors an IT administrator reads, word for word as the IT guide quotes them.

``deploy/README.md`` (section 11) quotes the reason a job fails with; these
tests build the broken exams from the phantom and assert the whole message,
so that a reworded message fails here and in
``tests/unit/test_troubleshooting_table.py``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.assembly.assemble import assemble_exam
from dicom_node.assembly.dicom_files import find_dicom_files
from dicom_node.errors import AssemblyError, MissingBValueError, StationGapError
from dicom_node.simulator.scanner import write_exam
from processing.phantom import Phantom, make_phantom

UID = r"[0-9.]+"


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom("small", snr=0)


@pytest.fixture(scope="module")
def exam(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A standard-header exam, one series per station and b-value."""
    folder = tmp_path_factory.mktemp("exam")
    write_exam(phantom, folder, vendor="standard", split="station-b")
    return folder


def _failure(folder: Path, error: type[AssemblyError]) -> str:
    with pytest.raises(error) as raised:
        assemble_exam(find_dicom_files(folder))
    return str(raised.value)


def test_a_gap_between_stations_names_both_stations_and_the_unimaged_length(
    phantom: Phantom, exam: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "exam"
    shutil.copytree(exam, folder)
    third = phantom.stations[2]
    second = phantom.stations[1]
    move = (second.first_slice + second.n_slices - third.first_slice + 2) * phantom.spacing_mm[0]
    for path in sorted(folder.glob("S*_st3_b*/*.dcm")):
        ds = dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, round(z - move, 4)]
        ds.save_as(path, enforce_file_format=True)
    message = _failure(folder, StationGapError)
    found = re.fullmatch(
        rf"series {UID} \(.+\): station 2 \(series {UID}\) ends (\d+\.\d) mm above the start "
        r"of station 3, leaving (\d+\.\d) mm \(one or more grid slices\) unimaged; "
        "stations must touch or overlap",
        message,
    )
    assert found, message
    assert float(found.group(1)) > float(found.group(2)) > 0


def test_a_diffusion_image_without_b_value_names_the_file_and_the_tags_looked_at(
    exam: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "exam"
    shutil.copytree(exam, folder)
    broken = sorted(folder.glob("S*_st1_b600/*.dcm"))[0]
    ds = dcmread(broken)
    del ds.DiffusionBValue
    ds.save_as(broken, enforce_file_format=True)
    message = _failure(folder, MissingBValueError)
    assert message.startswith(f"series {ds.SeriesInstanceUID} ("), message
    assert f": instance {broken} is a diffusion image (ImageType " in message
    assert message.endswith(
        ") but has no b-value in (0018,9087), Siemens (0019,xx0C) or CSA, "
        "GE (0043,xx39) or Philips (2001,xx03)"
    ), message
