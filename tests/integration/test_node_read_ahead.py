"""The node reads the images of a study while they arrive; the job assembles them from memory.

dcmtk ``storescu`` plays the scanner; the exam becomes complete after the quiet
period, by which time the read-ahead process has read every MR image. Without
it (``node.read_ahead_mb = 0``; on by default) the job reads them itself, and the
results are the same objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.node_harness import NodeProcess, storescu, wait_for, write_phantom_exam

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _assembled_event(node: NodeProcess) -> dict[str, object]:
    for line in node.log().splitlines():
        if line.startswith("{") and '"exam_assembled"' in line:
            event: dict[str, object] = json.loads(line)
            return event
    raise AssertionError(f"no exam_assembled event in the node's log {node.log_path}")


def _results(node: NodeProcess) -> set[str]:
    """Result file names (``<SOPInstanceUID>.dcm``: UIDs follow from inputs and settings)."""
    return {path.name for path in (node.data_dir / "results").rglob("*.dcm")}


def _run(workdir: Path, exam: Path, env: dict[str, str]) -> tuple[dict[str, object], set[str]]:
    workdir.mkdir()
    with NodeProcess(workdir, quiet_seconds=2.0, env=env) as node:
        sent = storescu(exam, node.port)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: node.all_jobs_in("done", "failed"), 180, "the job to finish")
        assert node.job_states()[0][1] == "done", node.log()[-2000:]
        event = _assembled_event(node)
        return event, _results(node)


def test_the_job_takes_the_images_read_while_they_arrived(tmp_path: Path) -> None:
    files = write_phantom_exam(tmp_path / "exam", distractors=True)
    event, written = _run(tmp_path / "ahead", tmp_path / "exam", {})  # on by default
    mr_instances = int(event["instances"])  # type: ignore[call-overload]
    assert 0 < mr_instances <= len(files)
    # the quiet period (2 s) leaves the read-ahead thread ample time for a small exam
    assert event["read_ahead"] == mr_instances, event
    assert written

    event_off, written_off = _run(
        tmp_path / "off", tmp_path / "exam", {"WBDWI_NODE_READ_AHEAD_MB": "0"}
    )
    assert event_off["read_ahead"] == 0, event_off
    assert event_off["instances"] == mr_instances
    assert written_off == written  # the same objects
