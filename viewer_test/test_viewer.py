"""``make viewer-test``: the demo study's result objects in OHIF 3.13 and Orthanc's Web Viewer.

One run (module fixture) makes the demo study with the project's own pipeline, stores
inputs and results in Orthanc with DICOMweb, serves the prebuilt OHIF on the same origin,
and runs ``ohif_checks.mjs`` in Debian's headless Chromium. Each test below asserts on
what the page and OHIF's state showed for one claim of issue 11:

- the ADC series opens with the file's window;
- every SEG loads over the computed-b series, in seconds, with every segment (label,
  colour, voxel count equal to the file's) and no loader error;
- the ADC classes show in their colours (visible, not covered by another segment);
- the SR opens in OHIF's SR viewport, each lesion with its volume and a location to
  navigate to; its measurements load into the measurement panel, one row per location
  group (every lesion, the ADC classes and the total, each labelled with its volume);
- the derived series render in Orthanc's Web Viewer with the file's window.

Screenshots: ``viewer-test-out/<check>.png`` (and ``<check>.html`` when a check failed).
Set ``WBDWI_VIEWER_TREE`` to another checkout to look at the objects its code writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_node.readers.report_reader import read_measurement_report
from tests.conftest import IN_CI, free_port, require_tool
from tests.helpers.node_harness import NodeProcess, storescu, wait_for
from tests.helpers.orthanc import OrthancServer, orthanc_binary
from viewer_test.expected import Expected, read_expected
from viewer_test.stack import (
    DICOMWEB_PLUGIN,
    OhifServer,
    Study,
    make_study,
    upload,
    viewer_orthanc,
)

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".viewer-cache"
OHIF_VERSION = "3.13.2"
OHIF_DIST = CACHE / f"ohif-{OHIF_VERSION}" / "dist"
NODE_MODULES = CACHE / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")
OUT = Path(os.environ.get("WBDWI_VIEWER_OUT", REPO / "viewer-test-out"))
CHECK_TIMEOUT_S = 60
SEG_LOAD_LIMIT_S = 30
NODE_MODALITY = "wbdwi"

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class BrowserRun:
    """The study, what its files say, and what the browser saw (``ohif_checks.mjs``)."""

    expected: Expected
    checks: dict[str, dict[str, Any]]
    orthanc: OrthancServer
    web_viewer: bool
    node: NodeProcess | None
    study: Study
    correction: dict[str, Any] | None

    def check(self, name: str) -> dict[str, Any]:
        if name not in self.checks:
            pytest.fail(f"the browser run has no result for {name} (see {OUT}/browser.log)")
        return self.checks[name]


def _require(path: Path, hint: str) -> None:
    if not path.exists():
        message = f"{path} missing ({hint})"
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)


def _orthanc_id(server: OrthancServer, series_uid: str) -> str:
    request = urllib.request.Request(
        server.base_url + "/tools/lookup", data=series_uid.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        hits = json.loads(response.read())
    return str(next(hit["ID"] for hit in hits if hit["Type"] == "Series"))


def _run_browser(spec: dict[str, Any], checks: int) -> dict[str, Any]:
    spec_path = OUT / "spec.json"
    result_path = OUT / "result.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    # Each check is bounded in the script; this bounds the whole run (a wedged browser).
    limit = checks * (CHECK_TIMEOUT_S + 45) + 60
    node = require_tool("node", "install Node.js (make viewer-tools)")
    with (OUT / "browser.log").open("w") as log:
        process = subprocess.Popen(
            [node, str(REPO / "viewer_test" / "ohif_checks.mjs"), str(spec_path), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            pytest.fail(f"the browser checks ran past {limit} s (see {OUT}/browser.log)")
    if process.returncode != 0 or not result_path.exists():
        log = (OUT / "browser.log").read_text()[-3000:]
        pytest.fail(f"ohif_checks.mjs exited {process.returncode}:\n{log}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


def _correction_plan(expected: Expected) -> dict[str, Any] | None:
    """The lesion SEG (only lesion segments, one per lesion) and its largest lesion to remove."""
    for seg in expected.segs:
        segments = seg["segments"]
        only_lesions = not any(segment["is_adc_class"] for segment in segments)
        if segments and len(segments) == len(expected.lesions) and only_lesions:
            largest = max(segments, key=lambda segment: segment["voxels"])
            return {
                "seg_description": seg["description"],
                "segments": len(segments),
                "remove_segment": largest["number"],
            }
    return None


@contextmanager
def _study_from_the_node(workdir: Path, node: NodeProcess) -> Iterator[Study]:
    """The demo path: the scanner sends the phantom exam to the node, which sends its results
    to Orthanc (and keeps them in its results folder); the node runs until the end."""
    phantom = workdir / "phantom"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "phantom", "--out", str(phantom),
         "--preset", "reference", "--seed", "1"],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with node:
        sent = storescu(phantom / "dicom", node.port)
        assert sent.returncode == 0, sent.stderr
        _wait_jobs(node, 1)
        [study_dir] = (node.data_dir / "results").iterdir()
        results = study_dir / "v1"
        measurements = json.loads((results / "measurements.json").read_text())
        try:
            yield Study(phantom / "dicom", results, measurements)
        finally:
            if node.log_path.exists():
                shutil.copyfile(node.log_path, OUT / "node.log")


def _wait_jobs(node: NodeProcess, count: int) -> None:
    wait_for(
        lambda: len(node.job_states()) == count and node.all_jobs_in("done", "failed"),
        300,
        f"{count} job(s) of the node to finish (log: {node.log_path})",
        poll=0.5,
    )
    failed = [job for job in node.job_states() if job[1] != "done"]
    assert not failed, failed


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserRun]:
    orthanc_binary()
    _require(DICOMWEB_PLUGIN, "Debian package orthanc-dicomweb (make viewer-tools)")
    _require(CHROMIUM, "Debian package chromium (make viewer-tools)")
    _require(NODE_MODULES / "playwright-core", "npm ci into .viewer-cache (make viewer-tools)")
    _require(OHIF_DIST / "index.html", f"@ohif/app@{OHIF_VERSION} dist (make viewer-tools)")
    require_tool("storescu", "install dcmtk (make viewer-tools)")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    workdir = tmp_path_factory.mktemp("viewer")
    tree = os.environ.get("WBDWI_VIEWER_TREE")
    with ExitStack() as stack:
        orthanc_dicom_port = free_port()
        destination = f"ORTHANC@127.0.0.1:{orthanc_dicom_port}"
        node = None if tree else NodeProcess(workdir, destinations=[destination])
        modalities = {} if node is None else {NODE_MODALITY: ["WBDWI", "127.0.0.1", node.port]}
        server, web_viewer = stack.enter_context(
            viewer_orthanc(workdir, dicom_port=orthanc_dicom_port, modalities=modalities)
        )
        if node is None:
            study = make_study(workdir, Path(str(tree)))
        else:
            study = stack.enter_context(_study_from_the_node(workdir, node))
        yield from _browse(study, node, server, web_viewer)


def _browse(
    study: Study, node: NodeProcess | None, server: OrthancServer, web_viewer: bool
) -> Iterator[BrowserRun]:
    expected = read_expected(study.results, study.measurements)
    # The scanner's images in the PACS too; the node's results are there already (or, for
    # an offline run of another tree, stored now).
    stored = upload(server, [study.inputs] if node is not None else [study.inputs, study.results])
    series_count = len(server.rest(f"/studies/{_study_id(server, expected.study_uid)}")["Series"])
    web_viewer_series = []
    if web_viewer:
        named = (
            ("adc", expected.adc),
            ("computed_b", expected.computed_b),
            ("key_images", expected.key_images),
        )
        for name, series in named:
            if series is not None:
                web_viewer_series.append(
                    {
                        **series,
                        "name": name,
                        "orthanc_id": _orthanc_id(server, series["series_uid"]),
                        "window": series.get("window"),
                    }
                )
    correction = _correction_plan(expected) if node is not None else None
    with OhifServer(OHIF_DIST, server.http_port) as ohif:
        spec = {
            "origin": ohif.origin,
            "orthanc": server.base_url,
            "expected": expected.as_json(),
            "out_dir": str(OUT),
            "check_timeout_s": CHECK_TIMEOUT_S,
            "seg_load_limit_s": SEG_LOAD_LIMIT_S,
            "node_modules": str(NODE_MODULES),
            "chromium": str(CHROMIUM),
            "min_series": series_count,
            "web_viewer_series": web_viewer_series,
            "correction": correction,
        }
        checks = 2 + len(expected.segs) + len(expected.srs) + len(web_viewer_series)
        result = _run_browser(spec, checks)
    (OUT / "study.json").write_text(
        json.dumps({"instances_stored": stored, "series": series_count, **expected.as_json()})
    )
    yield BrowserRun(expected, result["checks"], server, web_viewer, node, study, correction)


def _study_id(server: OrthancServer, study_uid: str) -> str:
    request = urllib.request.Request(
        server.base_url + "/tools/lookup", data=study_uid.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())[0]["ID"])


def _explain(name: str, record: dict[str, Any], problems: list[str]) -> str:
    lines = [f"{name}: {problem}" for problem in problems]
    lines.append(
        f"  screenshot {OUT / (name + '.png')}; {record.get('seconds')} s; "
        f"facts in {OUT}/result.json"
    )
    return "\n".join(lines)


def _assert_screenshot(name: str) -> None:
    assert (OUT / f"{name}.png").stat().st_size > 0, f"no screenshot {name}.png"


def test_adc_series_opens_with_the_files_window(browser_run: BrowserRun) -> None:
    record = browser_run.check("adc_window")
    _assert_screenshot("adc_window")
    assert record["ok"], _explain("adc_window", record, record["problems"])
    window = browser_run.expected.adc["window"]
    assert abs(record["facts"]["windowCenter"] - window["center"]) <= 1
    assert abs(record["facts"]["windowWidth"] - window["width"]) <= 1


def test_every_seg_loads_over_the_computed_b_series(browser_run: BrowserRun) -> None:
    assert browser_run.expected.segs, "the pipeline wrote no SEG"
    failures = []
    for index, seg in enumerate(browser_run.expected.segs, start=1):
        name = f"seg{index}"
        record = browser_run.check(name)
        _assert_screenshot(name)
        if record["problems"]:
            failures.append(
                f"[{seg['description']}]\n" + _explain(name, record, record["problems"])
            )
    assert not failures, "\n".join(failures)


def test_adc_classes_show_in_their_colours(browser_run: BrowserRun) -> None:
    class_segs = [
        (index, seg)
        for index, seg in enumerate(browser_run.expected.segs, start=1)
        if any(segment["is_adc_class"] for segment in seg["segments"])
    ]
    assert class_segs, "no SEG holds the ADC class segments"
    failures = []
    for index, seg in class_segs:
        name = f"seg{index}"
        record = browser_run.check(name)
        problems = record["facts"].get("class_problems")
        if problems is None:
            problems = [
                "the SEG did not load far enough to look at its classes",
                *record["problems"],
            ]
        if problems:
            failures.append(f"[{seg['description']}]\n" + _explain(name, record, problems))
    assert not failures, "\n".join(failures)


def test_sr_opens_with_every_lesion_volume_and_location(browser_run: BrowserRun) -> None:
    assert browser_run.expected.srs, "the pipeline wrote no SR"
    failures = []
    for index, sr in enumerate(browser_run.expected.srs, start=1):
        name = f"sr{index}"
        record = browser_run.check(name)
        _assert_screenshot(name)
        if record["problems"]:
            failures.append(f"[{sr['description']}]\n" + _explain(name, record, record["problems"]))
    assert not failures, "\n".join(failures)


def test_sr_measurements_panel_lists_the_lesions_with_their_volumes(
    browser_run: BrowserRun,
) -> None:
    failures = []
    for index, sr in enumerate(browser_run.expected.srs, start=1):
        name = f"sr{index}"
        record = browser_run.check(name)
        problems = record["facts"].get("panel_problems")
        if problems is None:
            problems = ["the SR viewport did not get as far as the panel", *record["problems"]]
        if problems:
            failures.append(f"[{sr['description']}]\n" + _explain(name, record, problems))
    assert not failures, "\n".join(failures)


def test_derived_series_render_in_orthancs_web_viewer(browser_run: BrowserRun) -> None:
    if not browser_run.web_viewer:
        message = "Orthanc's Web Viewer plugin (Debian orthanc-webviewer) is not installed"
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    failures = []
    for name in ("adc", "computed_b", "key_images"):
        check = f"orthanc_{name}"
        if check not in browser_run.checks:
            continue
        record = browser_run.checks[check]
        _assert_screenshot(check)
        if record["problems"]:
            failures.append(_explain(check, record, record["problems"]))
    assert "orthanc_adc" in browser_run.checks and "orthanc_computed_b" in browser_run.checks
    assert not failures, "\n".join(failures)


def _instance_id(server: OrthancServer, sop_instance_uid: str) -> str | None:
    hits = json.loads(
        server.rest_bytes("/tools/lookup", method="POST", body=sop_instance_uid.encode())
    )
    return next((str(hit["ID"]) for hit in hits if hit["Type"] == "Instance"), None)


def test_reader_correction_made_in_ohif_recomputes_the_report(browser_run: BrowserRun) -> None:
    """OHIF's SEG writer makes the corrected SEG (one lesion removed, a region added), OHIF
    stores it in Orthanc, Orthanc sends it to the node, the node's recomputed SR reaches
    Orthanc with the tDV of the voxels the reader kept."""
    node = browser_run.node
    if node is None:
        pytest.skip("WBDWI_VIEWER_TREE: results made offline, no node to send a correction to")
    assert browser_run.correction is not None, "no SEG with one segment per lesion to correct"
    record = browser_run.check("correction")
    _assert_screenshot("correction")
    assert record["ok"], _explain("correction", record, record["problems"])
    facts = record["facts"]
    server = browser_run.orthanc
    reader_seg = _instance_id(server, facts["reader_seg_uid"])
    assert reader_seg, f"OHIF's SEG {facts['reader_seg_uid']} is not in Orthanc (STOW-RS)"
    # Kept as an artefact: the SEG exactly as OHIF wrote it (for the node's SEG reader).
    (OUT / "reader-seg-ohif.dcm").write_bytes(server.rest_bytes(f"/instances/{reader_seg}/file"))
    # The PACS forwards the reader's SEG to the node (as an auto-routing rule would).
    answer = server.rest(
        f"/modalities/{NODE_MODALITY}/store",
        method="POST",
        body={"Resources": [reader_seg], "Synchronous": True},
    )
    assert answer.get("FailedInstancesCount", 0) == 0, answer
    _wait_jobs(node, 2)
    corrected_dir = browser_run.study.results.parent / "v2"
    corrected = json.loads((corrected_dir / "measurements.json").read_text())
    assert corrected["correction"]["seg_sop_instance_uid"] == facts["reader_seg_uid"]
    sr_uid = corrected["exam_summary"]["sr_sop_instance_uid"]
    sr_id = wait_for(lambda: _instance_id(server, sr_uid), 60, "the corrected SR in Orthanc")
    sr = pydicom.dcmread(BytesIO(server.rest_bytes(f"/instances/{sr_id}/file")))
    [automatic_path] = (browser_run.study.results / "sr").glob("*.dcm")
    automatic_sr = pydicom.dcmread(automatic_path)
    automatic = read_measurement_report(automatic_sr)
    report = read_measurement_report(sr)
    expected_tdv = facts["kept_voxels"] * automatic.voxel_volume_ml
    assert report.tdv_ml == pytest.approx(expected_tdv, abs=1e-3), (
        f"corrected SR tDV {report.tdv_ml} ml; the reader kept {facts['kept_voxels']} voxels "
        f"of {automatic.voxel_volume_ml} ml = {expected_tdv} ml"
    )
    removed_ml = facts["removed_voxels"] * automatic.voxel_volume_ml
    added_ml = facts["added_voxels"] * automatic.voxel_volume_ml
    assert report.tdv_ml == pytest.approx(automatic.tdv_ml - removed_ml + added_ml, abs=0.06)
    predecessors = [
        item.ReferencedSOPInstanceUID
        for study in sr.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    assert automatic_sr.SOPInstanceUID in predecessors
    assert _instance_id(server, automatic_sr.SOPInstanceUID), "the automatic SR must stay"
