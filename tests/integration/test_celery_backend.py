"""The celery backend with the real engine: RabbitMQ, worker processes, the node, Orthanc.

One private RabbitMQ serves the module (:mod:`tests.helpers.rabbitmq`); each
test has its own virtual host. The node runs with ``[queue] backend =
"celery"`` on the CPU queue and real ``wbdwi worker`` processes
(:mod:`tests.helpers.celery_worker`) run the phantom exams.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.helpers.celery_worker import WorkerProcess
from tests.helpers.node_harness import (
    NodeProcess,
    orthanc_study_instances,
    storescu,
    wait_for,
    write_phantom_exam,
)
from tests.helpers.orthanc import OrthancServer, running_orthanc
from tests.helpers.rabbitmq import RabbitMQ, running_rabbitmq

pytestmark = [pytest.mark.integration]

DELIVERY_LIMIT = 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    with running_rabbitmq(tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture
def broker_url(broker: RabbitMQ) -> str:
    return broker.vhost_url(f"t-{uuid.uuid4().hex[:8]}")


def _node(tmp_path: Path, broker_url: str, orthanc: OrthancServer | None) -> NodeProcess:
    destinations = [f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"] if orthanc else []
    return NodeProcess(
        tmp_path,
        destinations=destinations,
        quiet_seconds=1.0,
        env={
            "WBDWI_QUEUE_BACKEND": "celery",
            "WBDWI_QUEUE_BROKER_URL": broker_url,
            "WBDWI_QUEUE_DELIVERY_LIMIT": str(DELIVERY_LIMIT),
        },
    )


def _exam(tmp_path: Path, index: int) -> tuple[Path, str]:
    folder = tmp_path / f"exam-{index}"
    files = write_phantom_exam(folder, patient_id=f"PHANTOM-{index:04d}", seed=index)
    return folder, str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _result_count(node: NodeProcess, study_uid: str) -> int:
    [summary] = list((node.data_dir / "results" / study_uid).glob("v*/job.json"))
    return len(json.loads(summary.read_text())["result_files"])


def _logs(node: NodeProcess, *workers: WorkerProcess) -> str:
    return "\n".join([node.log()[-6000:], *(w.log()[-4000:] for w in workers)])


@pytest.mark.slow
def test_two_workers_share_exams_and_a_killed_worker_s_job_reaches_the_pacs_once(
    tmp_path: Path, broker_url: str
) -> None:
    exams = [_exam(tmp_path, index) for index in range(3)]
    with running_orthanc(tmp_path) as orthanc, _node(tmp_path, broker_url, orthanc) as node:
        workers = [
            WorkerProcess(tmp_path, broker_url, name, DELIVERY_LIMIT, hold_seconds=4.0).start()
            for name in ("a", "b")
        ]
        try:
            for folder, _ in exams:
                assert storescu(folder, node.port).returncode == 0
            # Both workers take a job: the stream is shared.
            wait_for(lambda: len(workers[0].markers()) >= 2, 90, "two jobs started", poll=0.05)
            started = {p.read_text() for p in workers[0].started_dir.iterdir()}
            assert started == {"a", "b"}, _logs(node, *workers)
            workers[0].kill9()  # worker a dies mid-job (within its 4 s hold)
            [killed_job] = [
                int(p.name.split("-")[0])
                for p in workers[0].started_dir.iterdir()
                if p.read_text() == "a"
            ]
            wait_for(
                lambda: node.all_jobs_in("done", "failed"),
                150,
                f"every job done\n{_logs(node, *workers)}",
                poll=0.5,
            )
        finally:
            for worker in workers:
                worker.stop()
        assert [s for _, s, _, _ in node.job_states()] == ["done"] * 3, node.job_states()
        markers = [p.name for p in workers[0].started_dir.iterdir()]
        assert sum(m.startswith(f"{killed_job}-") for m in markers) == 2  # redelivered once
        for _, study_uid in exams:
            results = _result_count(node, study_uid)
            held = orthanc_study_instances(orthanc, study_uid)
            assert len({t["SOPInstanceUID"] for t in held}) == len(held) == results
        sent = node.query("SELECT COUNT(*), COUNT(DISTINCT sop_instance_uid) FROM ledger")
        total = sum(_result_count(node, s) for _, s in exams)
        assert sent == [(total, total)]  # each result stored in Orthanc exactly once
