"""kill -9 of the node while it receives, processes or exports; then a restart.

Every instance the node acknowledged is in its spool after the restart, and the
results arrive in Orthanc exactly once.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dicom_node.scu.mpps import complete_mpps, create_mpps, performed_exam
from dicom_node.scu.send import Destination, SendReport, send_files
from tests.helpers.node_harness import (
    NodeProcess,
    orthanc_study_instances,
    storescu,
    wait_for,
    write_phantom_exam,
)
from tests.helpers.orthanc import running_orthanc

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _count(node: NodeProcess, sql: str) -> int:
    rows = node.query(sql)
    return int(rows[0][0]) if rows else 0


def _spooled_uids(node: NodeProcess) -> set[str]:
    return {path.stem for path in (node.data_dir / "spool").rglob("*.dcm")}


@pytest.mark.parametrize("phase", ["receive", "processing", "export"])
def test_kill_9_then_restart_loses_nothing_and_sends_once(tmp_path: Path, phase: str) -> None:
    files = write_phantom_exam(tmp_path / "exam")
    exam = performed_exam(files)
    with running_orthanc(tmp_path) as orthanc:
        node = NodeProcess(
            tmp_path,
            destinations=[f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"],
            quiet_seconds=600,
        ).start()
        try:
            scanner = Destination("127.0.0.1", node.port, "WBDWI", calling_aet="SCANNER")
            mpps_uid = create_mpps(scanner, exam)
            if phase == "receive":
                reports: list[SendReport] = []
                sender = threading.Thread(target=lambda: reports.append(send_files(files, scanner)))
                sender.start()
                wait_for(
                    lambda: _count(node, "SELECT COUNT(*) FROM instances") >= 150,
                    60,
                    "150 instances received",
                    poll=0.02,
                )
                node.kill()
                sender.join(timeout=60)
                acknowledged = {o.sop_instance_uid for o in reports[0].outcomes if o.stored}
                assert 150 <= len(acknowledged) < len(files)
                node.start()
                assert acknowledged <= _spooled_uids(node)
                known = {row[0] for row in node.query("SELECT sop_instance_uid FROM instances")}
                assert acknowledged <= known
                # The scanner sends the exam again, then completes its MPPS.
                assert storescu(tmp_path / "exam", node.port).returncode == 0
                complete_mpps(scanner, mpps_uid, exam)
            else:
                assert storescu(tmp_path / "exam", node.port).returncode == 0
                complete_mpps(scanner, mpps_uid, exam)
                if phase == "processing":
                    wait_for(
                        lambda: any(s == "processing" for _, s, _, _ in node.job_states()),
                        60,
                        "processing to start",
                        poll=0.02,
                    )
                else:
                    wait_for(
                        lambda: (
                            _count(node, "SELECT COUNT(*) FROM outbox WHERE state='sent'") >= 20
                            and _count(node, "SELECT COUNT(*) FROM outbox WHERE state='pending'")
                            > 0
                        ),
                        90,
                        "export to be under way",
                        poll=0.02,
                    )
                node.kill()
                node.start()
            assert _spooled_uids(node) == {uid for s in exam.series for _, uid in s.instances}
            wait_for(lambda: node.all_jobs_in("done", "failed"), 180, "the job to finish")
            assert [(v, s) for _, s, v, _ in node.job_states()] == [(1, "done")]
            assert '"event": "recovered"' in node.log()
        finally:
            node.stop()
        [summary] = list((node.data_dir / "results").glob("*/v1/job.json"))
        result_count = len(json.loads(summary.read_text())["result_files"])
        held = orthanc_study_instances(orthanc, exam.study_uid)
        assert len(held) == result_count
        assert len({tags["SOPInstanceUID"] for tags in held}) == result_count
        sent = node.query("SELECT COUNT(*), COUNT(DISTINCT sop_instance_uid) FROM ledger")
        assert sent == [(result_count, result_count)]
