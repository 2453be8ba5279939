"""A portable job spec (issue 15): version, settings digest, older specs still load."""

from __future__ import annotations

import json
from dataclasses import replace

from service.jobs import JobSpec, check_spec_compatible, settings_digest

PROCESSING = {"b_values": [50, 900], "threshold": 1.5}


def _spec() -> JobSpec:
    return JobSpec(
        job_key="1.2.3:wbdwi/1.0:abc",
        job_id=7,
        study_uid="1.2.3",
        version=1,
        input_paths=("spool/1.2.3/a.dcm",),
        output_dir="results/1.2.3/v1",
        processing=PROCESSING,
        software_version="1.0",
        settings_digest=settings_digest(PROCESSING),
    )


def test_round_trip_keeps_version_and_digest() -> None:
    spec = _spec()
    again = JobSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["software_version"] == "1.0"


def test_a_spec_stored_before_issue_15_still_loads_and_runs() -> None:
    stored = json.dumps(
        {
            "job_key": "1.2.3:wbdwi/0.9:abc",
            "job_id": 3,
            "study_uid": "1.2.3",
            "version": 1,
            "input_paths": ["/var/lib/wbdwi/spool/1.2.3/a.dcm"],
            "output_dir": "/var/lib/wbdwi/results/1.2.3/v1",
            "destinations": [],
            "device": "auto",
            "processing": {},
            "priors": None,
        }
    )
    spec = JobSpec.from_json(stored)
    assert spec.software_version == "" and spec.settings_digest == ""
    assert spec.input_paths == ("/var/lib/wbdwi/spool/1.2.3/a.dcm",)
    assert check_spec_compatible(spec, "2.0") is None
    # Written again, it is the same JSON (no new keys for empty fields).
    assert json.loads(spec.to_json()) == json.loads(stored)


def test_another_software_version_is_refused_with_a_reason() -> None:
    spec = _spec()
    assert check_spec_compatible(spec, "1.0") is None
    reason = check_spec_compatible(spec, "1.1")
    assert reason is not None
    assert "software version 1.0" in reason and "runs 1.1" in reason


def test_altered_settings_are_refused() -> None:
    spec = replace(_spec(), processing={**PROCESSING, "threshold": 9.0})
    reason = check_spec_compatible(spec, "1.0")
    assert reason is not None and "settings digest" in reason


def test_the_digest_ignores_key_order() -> None:
    assert settings_digest({"a": 1, "b": 2}) == settings_digest({"b": 2, "a": 1})
    assert settings_digest({"a": 1}) != settings_digest({"a": 2})
