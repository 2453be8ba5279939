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
  navigate to; its measurements load into the measurement panel, one row per lesion;
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
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, require_tool
from tests.orthanc import OrthancServer, orthanc_binary
from viewer_test.expected import Expected, read_expected
from viewer_test.stack import DICOMWEB_PLUGIN, OhifServer, make_study, upload, viewer_orthanc

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".viewer-cache"
OHIF_VERSION = "3.13.2"
OHIF_DIST = CACHE / f"ohif-{OHIF_VERSION}" / "dist"
NODE_MODULES = CACHE / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")
OUT = Path(os.environ.get("WBDWI_VIEWER_OUT", REPO / "viewer-test-out"))
CHECK_TIMEOUT_S = 60
SEG_LOAD_LIMIT_S = 30

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class BrowserRun:
    """The study, what its files say, and what the browser saw (``ohif_checks.mjs``)."""

    expected: Expected
    checks: dict[str, dict[str, Any]]
    orthanc: OrthancServer
    web_viewer: bool

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


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserRun]:
    orthanc_binary()
    _require(DICOMWEB_PLUGIN, "Debian package orthanc-dicomweb (make viewer-tools)")
    _require(CHROMIUM, "Debian package chromium (make viewer-tools)")
    _require(NODE_MODULES / "playwright-core", "npm ci into .viewer-cache (make viewer-tools)")
    _require(OHIF_DIST / "index.html", f"@ohif/app@{OHIF_VERSION} dist (make viewer-tools)")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    workdir = tmp_path_factory.mktemp("viewer")
    tree = os.environ.get("WBDWI_VIEWER_TREE")
    study = make_study(workdir, Path(tree) if tree else None)
    expected = read_expected(study.results, study.measurements)
    with viewer_orthanc(workdir) as (server, web_viewer):
        stored = upload(server, [study.inputs, study.results])
        series_count = len(
            server.rest(f"/studies/{_study_id(server, expected.study_uid)}")["Series"]
        )
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
            }
            checks = 1 + len(expected.segs) + len(expected.srs) + len(web_viewer_series)
            result = _run_browser(spec, checks)
        (OUT / "study.json").write_text(
            json.dumps(
                {"instances_stored": stored, "series": series_count, **expected.as_json()}, indent=2
            )
        )
        yield BrowserRun(expected, result["checks"], server, web_viewer)


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
