"""The celery backend's messages and queue definitions, without a broker."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from processing.quality import QualityAssessment
from service.jobs import JobSpec
from service.queue_celery.config import (
    DEAD_LETTER_EXCHANGE,
    job_queue,
    job_queue_name,
    make_app,
)
from service.queue_celery.messages import JobEnvelope, JobEvent, settings_digest


def _spec(**changes: object) -> JobSpec:
    spec = JobSpec(
        job_key="1.2.3:wbdwi/1.0:abc",
        job_id=7,
        study_uid="1.2.3",
        version=1,
        input_paths=("/shared/spool/a.dcm",),
        output_dir="/shared/results/1.2.3/v1",
        processing={"b_high": 1000.0, "adc_low": 0.6},
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


def test_an_envelope_round_trips_through_json_and_a_matching_worker_may_run_it() -> None:
    envelope = JobEnvelope.for_spec(_spec(), "1.0")
    again = JobEnvelope.from_dict(json.loads(json.dumps(envelope.to_dict())))
    assert again == envelope
    assert JobSpec.from_json(again.spec) == _spec()
    assert again.refusal("1.0") == ""


def test_a_worker_of_another_version_refuses_with_both_versions_named() -> None:
    refusal = JobEnvelope.for_spec(_spec(), "1.0").refusal("1.1")
    assert "made by wbdwi 1.0" in refusal and "runs wbdwi 1.1" in refusal


def test_settings_changed_after_publishing_are_refused() -> None:
    envelope = JobEnvelope.for_spec(_spec(), "1.0")
    tampered = replace(envelope, spec=_spec(processing={"b_high": 800.0}).to_json())
    assert "digest" in tampered.refusal("1.0")


def test_the_settings_digest_ignores_key_order_and_sees_values() -> None:
    assert settings_digest({"a": 1, "b": 2}) == settings_digest({"b": 2, "a": 1})
    assert settings_digest({"a": 1}) != settings_digest({"a": 2})


def test_an_envelope_without_a_field_is_a_clear_error() -> None:
    payload = JobEnvelope.for_spec(_spec(), "1.0").to_dict()
    del payload["software_version"]
    with pytest.raises(ValueError, match="lacks the field 'software_version'"):
        JobEnvelope.from_dict(payload)
    with pytest.raises(ValueError, match="JSON object"):
        JobEnvelope.from_dict(["not", "an", "object"])


def test_a_finished_event_round_trips_with_its_results_and_verdict() -> None:
    quality = QualityAssessment()
    event = JobEvent(
        "finished",
        "k",
        7,
        "w@host",
        results=(("/r/a.dcm", "1.2.3.4"),),
        quality=quality.as_dict(),
        seconds=3.5,
        device="cpu",
    )
    again = JobEvent.from_dict(json.loads(json.dumps(event.to_dict())))
    assert again == event
    assert again.assessment() == quality


def test_an_unknown_event_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown job event kind 'exploded'"):
        JobEvent("exploded", "k", 1, "w")


def test_job_queues_are_quorum_queues_with_a_delivery_limit_and_dead_letters() -> None:
    queue = job_queue("gpu", 4)
    assert queue.name == "wbdwi.gpu"
    assert queue.queue_arguments["x-queue-type"] == "quorum"
    assert queue.queue_arguments["x-delivery-limit"] == 4
    assert queue.queue_arguments["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE
    with pytest.raises(ValueError, match="queue must be one of gpu, cpu"):
        job_queue_name("tpu")


def test_the_app_acknowledges_late_and_rejects_on_a_lost_worker() -> None:
    conf = make_app("amqp://guest:guest@127.0.0.1:1//", 5).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert conf.task_ignore_result is True
