"""The celery backend with the real engine: RabbitMQ, worker processes, the node, Orthanc.

One private RabbitMQ serves the module (:mod:`tests.helpers.rabbitmq`); each
test has its own virtual host. The node runs with ``[queue] backend =
"celery"`` on the CPU queue and real ``wbdwi worker`` processes
(:mod:`tests.helpers.celery_worker`) run the phantom exams.
"""

from __future__ import annotations

import json
import sqlite3
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
        extra_args=["--role", "receiver"],
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
    # The workers wrote no history database; the receiver recorded each exam from its report.
    with sqlite3.connect(node.data_dir / "history.sqlite3") as history:
        recorded = history.execute("SELECT patient_id, study_instance_uid FROM exam_history")
        assert sorted(recorded.fetchall()) == [
            (f"PHANTOM-{index:04d}", study_uid) for index, (_, study_uid) in enumerate(exams)
        ]
    assert node.log().count('"history_recorded"') == 3, node.log()[-3000:]


def _status(node: NodeProcess) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "status", "--data-dir", str(node.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


def test_a_poison_exam_is_dead_lettered_after_the_limit_with_its_reason_in_status(
    tmp_path: Path, broker: RabbitMQ, broker_url: str
) -> None:
    folder, study_uid = _exam(tmp_path, 7)
    with _node(tmp_path, broker_url, None) as node:
        worker = WorkerProcess(tmp_path, broker_url, "p", DELIVERY_LIMIT, crash_study=study_uid)
        with worker:
            assert storescu(folder, node.port).returncode == 0
            wait_for(
                lambda: node.all_jobs_in("failed"),
                120,
                f"the poison job to be given up\n{_logs(node, worker)}",
                poll=0.5,
            )
            # The worker survived its crashing pool processes and is still consuming.
            assert worker.process is not None and worker.process.poll() is None
        [(_, _, _, reason)] = node.job_states()
        assert "given up by the queue broker (delivery_limit)" in reason
        assert f"after {DELIVERY_LIMIT + 1} deliveries" in reason
        assert "started on p@test" in reason
        status = _status(node)
        assert "given up by the queue broker" in status, status
        # Each delivery started the job once, then the broker stopped handing it out.
        assert len(worker.markers()) == DELIVERY_LIMIT + 1, worker.markers()
        vhost = broker_url.rsplit("/", 1)[1]
        wait_for(
            lambda: (
                broker.queue_depth("wbdwi.cpu", vhost) == 0
                and broker.queue_depth("wbdwi.dead", vhost) == 0
            ),
            20,
            "the job and dead-letter queues to be empty "
            + broker.ctl(
                "list_queues",
                "-p",
                vhost,
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "messages",
            ).stdout,
        )


def test_a_worker_of_another_version_refuses_the_job_and_a_matching_worker_runs_it(
    tmp_path: Path, broker: RabbitMQ
) -> None:
    url = broker.vhost_url(f"t-{uuid.uuid4().hex[:8]}")
    limit = 10  # room for several refusals before the matching worker is up
    folder, study_uid = _exam(tmp_path, 8)
    node = _node(tmp_path, url, None)
    node.env["WBDWI_QUEUE_DELIVERY_LIMIT"] = str(limit)
    with node:
        old = WorkerProcess(tmp_path, url, "old", limit, software_version="0.0.0-other").start()
        new = WorkerProcess(tmp_path, url, "new", limit)
        try:
            assert storescu(folder, node.port).returncode == 0
            wait_for(
                lambda: '"job_refused_by_worker"' in node.log(),
                60,
                f"the old worker to refuse the job\n{_logs(node, old)}",
                poll=0.2,
            )
            new.start()
            wait_for(
                lambda: node.all_jobs_in("done", "failed"),
                120,
                f"the job to finish\n{_logs(node, old, new)}",
                poll=0.5,
            )
        finally:
            old.stop()
            new.stop()
        assert [s for _, s, _, _ in node.job_states()] == ["done"], node.job_states()
        assert {p.read_text() for p in new.started_dir.iterdir()} == {"new"}
        assert "runs wbdwi 0.0.0-other and leaves it to a worker of the same version" in old.log()
        assert _result_count(node, study_uid) > 0


@pytest.mark.slow
def test_rabbitmq_restarted_mid_run_loses_nothing(
    tmp_path: Path, broker: RabbitMQ, broker_url: str
) -> None:
    first, second = _exam(tmp_path, 11), _exam(tmp_path, 12)
    with running_orthanc(tmp_path) as orthanc, _node(tmp_path, broker_url, orthanc) as node:
        worker = WorkerProcess(tmp_path, broker_url, "r", DELIVERY_LIMIT, hold_seconds=3.0)
        with worker:
            assert storescu(first[0], node.port).returncode == 0
            wait_for(worker.markers, 60, "the first job to start", poll=0.05)
            broker.stop()  # mid-job: the worker's report and ack cannot reach the broker
            # The node still receives while the broker is away; the job waits in its ledger.
            assert storescu(second[0], node.port).returncode == 0
            broker.start()
            wait_for(
                lambda: len(node.job_states()) == 2 and node.all_jobs_in("done", "failed"),
                180,
                f"both jobs done after the broker restart\n{_logs(node, worker)}",
                poll=0.5,
            )
        assert [s for _, s, _, _ in node.job_states()] == ["done", "done"], node.job_states()
        total = 0
        for _, study_uid in (first, second):
            results = _result_count(node, study_uid)
            held = orthanc_study_instances(orthanc, study_uid)
            assert len({t["SOPInstanceUID"] for t in held}) == len(held) == results
            total += results
        sent = node.query("SELECT COUNT(*), COUNT(DISTINCT sop_instance_uid) FROM ledger")
        assert sent == [(total, total)]


def test_serve_role_all_with_the_celery_backend_runs_its_own_local_worker(
    tmp_path: Path, broker_url: str
) -> None:
    folder, study_uid = _exam(tmp_path, 21)
    node = _node(tmp_path, broker_url, None)
    node.extra_args = []  # --role all (the default): the receiver and node.workers workers
    with node:
        assert storescu(folder, node.port).returncode == 0
        wait_for(
            lambda: node.all_jobs_in("done", "failed"), 120, f"the job\n{node.log()}", poll=0.5
        )
        assert [s for _, s, _, _ in node.job_states()] == ["done"], node.job_states()
    log = node.log()
    assert '"worker": "wbdwi-local1@' in log  # the job ran on the local worker process
    assert _result_count(node, study_uid) > 0
