"""A negative quiet period names its key (issue 14), for the node and per scanner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cli import main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)


def test_negative_quiet_period_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--quiet-seconds", "-5", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "wbdwi serve: completion: quiet_seconds cannot be negative, got -5.0"


def test_negative_quiet_period_of_one_scanner(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "wbdwi.toml"
    config.write_text('[[calling_ae]]\nae_title = "CT1"\nquiet_seconds = -3\n', encoding="utf-8")
    assert main(["settings", "--effective", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "wbdwi settings: calling_ae[0]: quiet_seconds cannot be negative, got -3.0"
