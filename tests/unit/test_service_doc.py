"""``docs/service.md`` points to the generated settings reference instead of keeping its own table.

A hand-kept table drifts from the model (new sections missing, ``|`` in enum
types splitting cells); the generated ``docs/settings.md`` and
``deploy/wbdwi.example.toml`` cannot. The guide keeps a prose summary that
names every section.
"""

from __future__ import annotations

import re
from pathlib import Path

from service.settings.docs import settings_sections

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "service.md"


def _settings_chapter() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(r"^### Settings\n(.*?)(?=^#{1,3} )", text, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"{GUIDE} has no '### Settings' chapter"
    return match.group(1)


def test_settings_chapter_links_the_generated_reference() -> None:
    chapter = _settings_chapter()
    links = re.findall(r"\]\(([^)]+)\)", chapter)
    targets = {(GUIDE.parent / link).resolve() for link in links}
    assert REPO / "docs" / "settings.md" in targets
    assert REPO / "deploy" / "wbdwi.example.toml" in targets
    assert all(target.is_file() for target in targets), links


def test_settings_chapter_has_no_own_table_and_names_every_section() -> None:
    chapter = _settings_chapter()
    table_rows = [line for line in chapter.splitlines() if line.lstrip().startswith("|")]
    assert table_rows == [], "the settings table belongs in the generated docs/settings.md"
    for section in settings_sections():
        assert f"[{section.name}]" in chapter, f"section [{section.name}] is not summarised"
