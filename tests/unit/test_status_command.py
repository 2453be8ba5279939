"""``wbdwi status``: dead letters summarised per job and destination, complete in --json."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dicom_node.receive.spool import SpooledInstance
from service.cli import main
from service.jobs import JobSpec, OutboxState, make_job_key
from service.jobstore import SqliteJobStore

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.3"
FILES = 946


def _dead_lettered_store(data_dir: Path) -> None:
    store = SqliteJobStore(data_dir / "jobs.sqlite")
    try:
        store.record_instance(
            SpooledInstance(
                sop_instance_uid=f"{STUDY}.9.1",
                sop_class_uid=MR,
                study_uid=STUDY,
                series_uid=f"{STUDY}.1",
                series_description="DWI",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                calling_ae="SCANNER",
                path=data_dir / "spool" / "1.dcm",
                size_bytes=1000,
                received_at=time.time(),
            )
        )
        job_id = store.receiving_studies()[0].job_id
        spec = JobSpec(
            job_key=make_job_key(STUDY, "1.0", [f"{STUDY}.9.1"]),
            job_id=job_id,
            study_uid=STUDY,
            version=1,
            input_paths=(str(data_dir / "spool" / "1.dcm"),),
            output_dir=str(data_dir / "results"),
            destinations=("PACS@pacs:104", "ARCHIVE@archive:104"),
        )
        assert store.submit(spec)
        assert store.claim() is not None
        results = [(f"/results/{n}.dcm", f"{STUDY}.8.{n}") for n in range(FILES)]
        store.finish_processing(job_id, results, ["PACS@pacs:104", "ARCHIVE@archive:104"], 1.0)
        for row in store.outbox(state=OutboxState.PENDING, limit=None):
            if row.destination == "ARCHIVE@archive:104":
                store.mark_sent(row.outbox_id)
                continue
            error = "association rejected" if row.sop_instance_uid.endswith(".0") else "timeout"
            store.mark_attempt_failed(row.outbox_id, error, 0.0, max_attempts=1)
    finally:
        store.close()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)
    _dead_lettered_store(tmp_path)
    return tmp_path


def test_dead_letters_are_one_summary_per_job_and_destination(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--data-dir", str(data_dir)]) == 1
    out = capsys.readouterr().out
    section = out[out.index("dead letters:") :].split("retention:")[0].splitlines()
    assert section[0].startswith(f"dead letters: {FILES} file(s) in 1 job/destination group(s)")
    assert "wbdwi retry JOB" in section[0]
    assert section[1] == (
        f"  job 1 -> PACS@pacs:104: {FILES} file(s), up to 1 attempt(s); retry: wbdwi retry 1"
    )
    assert section[2] == "       first error: association rejected"
    assert section[3] == "       last error: timeout (2 different errors)"
    assert len(section) == 4
    assert len(out.splitlines()) < 30


def test_json_still_lists_every_dead_letter(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--data-dir", str(data_dir), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["dead_letters"]) == FILES
    assert {row["destination"] for row in payload["dead_letters"]} == {"PACS@pacs:104"}
    assert payload["dead_letter_groups"] == [
        {
            "job_id": 1,
            "destination": "PACS@pacs:104",
            "files": FILES,
            "max_attempts": 1,
            "first_error": "association rejected",
            "last_error": "timeout",
            "distinct_errors": 2,
            "retry": "wbdwi retry 1",
        }
    ]


def test_an_empty_store_says_there_are_no_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)
    SqliteJobStore(tmp_path / "jobs.sqlite").close()
    main(["status", "--data-dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"node: not running (no process holds {tmp_path.resolve() / 'wbdwi.lock'})"
    assert lines[1] == "jobs: none"


def test_status_says_whether_a_node_holds_the_data_folder(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.data_dir_lock import DataDirLock

    main(["status", "--json", "--data-dir", str(data_dir)])
    assert json.loads(capsys.readouterr().out)["node"] == {"running": False, "pid": None}
    lock = DataDirLock.acquire(data_dir)
    try:
        main(["status", "--data-dir", str(data_dir)])
        assert capsys.readouterr().out.splitlines()[0] == f"node: running (PID {os.getpid()})"
        main(["status", "--json", "--data-dir", str(data_dir)])
        node = json.loads(capsys.readouterr().out)["node"]
        assert node == {"running": True, "pid": os.getpid()}
    finally:
        lock.release()
    main(["status", "--data-dir", str(data_dir)])
    assert capsys.readouterr().out.startswith("node: not running")


def test_status_into_a_closed_pipe_prints_no_traceback(data_dir: Path) -> None:
    import subprocess
    import sys

    with subprocess.Popen(
        [sys.executable, "-m", "service.cli", "status", "--json", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("WBDWI_")},
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()  # a reader that stops after one line, as `head -1` does
        process.stdout.close()
        error = process.stderr.read().decode()
        process.wait(timeout=60)
    assert "Traceback" not in error
    assert "BrokenPipeError" not in error
