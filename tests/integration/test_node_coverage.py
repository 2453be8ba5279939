"""2 of 3 stations sent with dcmtk storescu: the exam is held, then processed as unreliable."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicom_node.simulator.scanner import write_exam
from processing.phantom import make_phantom
from tests.helpers.node_harness import NodeProcess, storescu, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXTRA_WAIT = 6.0


def test_two_of_three_stations_are_held_then_processed_as_unreliable(tmp_path: Path) -> None:
    files = write_exam(make_phantom("small", seed=0), tmp_path / "exam", distractors=False)
    first_two = [path for path in files if "_st3_" not in path.parent.name]
    assert 0 < len(first_two) < len(files)
    environment = {
        "WBDWI_COMPLETION_INCOMPLETE_EXTRA_WAIT_SECONDS": str(EXTRA_WAIT),
        "WBDWI_COMPLETION_EXPECTED_STATIONS": "3",
    }
    with NodeProcess(tmp_path, quiet_seconds=1.0, env=environment) as node:
        sent = storescu(first_two, node.port)
        assert sent.returncode == 0, sent.stderr
        held = wait_for(
            lambda: [job for job in node.job_states() if job[3].startswith("held until")],
            30,
            "the exam to be held",
        )
        held_at = time.monotonic()
        [(_, state, _, reason)] = held
        assert state == "receiving"
        assert "2 of the 3 stations expected" in reason
        wait_for(lambda: node.all_jobs_in("done", "failed"), 120, "the job to finish")
        assert time.monotonic() - held_at >= EXTRA_WAIT - 1.0
        assert node.job_states()[0][1] == "done", node.job_states()
        log = node.log()
        assert '"event": "job_held_incomplete"' in log
        assert '"event": "job_hold_over"' in log
        [job_json] = list((node.data_dir / "results").glob("*/v1/job.json"))
        job = json.loads(job_json.read_text())
        assert job["verdict"] == "unreliable"
        assert "stations_missing" in job["verdict_reasons"]
        quality = json.loads((job_json.parent / "measurements.json").read_text())["quality"]
        assert quality["measures"]["stations"] == 2
        assert 'wbdwi_results_by_verdict{verdict="unreliable"} 1' in node.metrics()
        status = subprocess.run(
            [sys.executable, "-m", "service.cli", "status", "--data-dir", str(node.data_dir)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "verdict: UNRELIABLE" in status.stdout, status.stdout + status.stderr
        assert "(stations_missing): The exam has 2 of the 3 stations expected" in status.stdout
