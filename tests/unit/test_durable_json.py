"""The one durable JSON writer: whole file or the old one, never a partial file or leftovers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service.durable_json import write_json_durably


def test_writes_indented_json_with_a_final_newline(tmp_path: Path) -> None:
    target = tmp_path / "measurements.json"
    payload = {"schema_version": 1, "lesions": [{"volume_ml": 1.5}], "note": "ø"}
    write_json_durably(target, payload)
    assert target.read_text(encoding="utf-8") == json.dumps(payload, indent=2) + "\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["measurements.json"]


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "job.json"
    write_json_durably(target, {"state": "old"})
    write_json_durably(target, {"state": "new"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"state": "new"}
    assert [path.name for path in tmp_path.iterdir()] == ["job.json"]


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "job.json"
    write_json_durably(target, {"state": "old"})

    def refuse(source: str, destination: Path) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk gone"):
        write_json_durably(target, {"state": "new"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"state": "old"}
    assert [path.name for path in tmp_path.iterdir()] == ["job.json"]


def test_an_unserialisable_payload_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "job.json"
    with pytest.raises(TypeError):
        write_json_durably(target, {"path": object()})
    assert list(tmp_path.iterdir()) == []
