"""The IT guide's troubleshooting table quotes messages the node emits and the tests assert.

``deploy/README.md`` section 11 is a table ``| symptom | message | cause and fix |``.
Each text in backticks in the *message* column is either a log event
(``association_rejected``) or a message as the node prints or logs it, with
example values (``calling AE 'CT_ROOM2' is not in the allow-list``). So that
the table cannot drift from the code:

- every event is a string literal of the code (``service/``, ``dicom_node/``,
  ``processing/``) and appears in a test under ``tests/``;
- every error class named (``StationGapError``) is defined in the code and named
  in a test;
- every message is cut into its fixed fragments at the example values (quoted
  values, ``<placeholders>``, ``...``, words with digits, ``@`` or ``/``, dotted
  setting names, AE titles in capitals) and at the joints where the code
  composes messages (``": "``, ``"; "``, ``" ("``); every fragment of two words
  or more must be text of one string literal of the code (f-string fields cut
  it), and a test must assert the message: a test's literal holds one of its
  fragments, or a piece of three words or more of one. ``NOT_YET_ASSERTED``
  lists the quoted messages no test asserts yet; it can only shrink.

A message reworded in the code, or a row written from memory, fails here with
the row and the fragment.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "deploy" / "README.md"
SOURCE_PACKAGES = ("service", "dicom_node", "processing")
SELF = Path(__file__).resolve()

_EVENT = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
_ERROR_CLASS = re.compile(r"^[A-Z]\w+Error$")
_QUOTED = re.compile(r"`([^`]+)`")
# Cuts: elisions and <placeholders>; quoted values; joints where messages are composed
# (": ", "; ", " ("); values: tokens with digits, "@" or "/", dotted setting names,
# AE titles and other words in capitals, DIMSE names (C-STORE), error classes.
_CUTS = re.compile(
    r"\.\.\.|…|<[^>]*>|'[^']*'|: |; | \("
    r"|\S*[\d@/]\S*|\b[a-z_]+(?:\.[a-z_]+)+\b"
    r"|(?<![\w-])[A-Z][A-Z0-9_]+(?:-[A-Z]+)?(?![\w-])|\b[A-Z]-[A-Z]+\b|\b[A-Z]\w+Error\b"
)
_MIN_WORDS = 2
# A piece of a test's string literal counts as asserting a fragment from this length.
_MIN_ASSERTED_WORDS = 3


# Quoted in the table and emitted by the code, but no test asserts them yet. Each entry
# must stay true: when a test starts asserting one, this check fails until the entry
# is removed, so the list only shrinks.
# (tests/unit/test_ops_troubleshooting_messages.py asserts the last four it listed.)
NOT_YET_ASSERTED: frozenset[str] = frozenset()


def troubleshooting_rows(text: str) -> list[tuple[str, str]]:
    """``(symptom, message cell)`` of each row of section 11's table."""
    section = text.split("\n## 11. Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[0]) <= {"-", " "}:
            continue
        if cells[:2] == ["symptom", "message"]:
            continue
        rows.append((cells[0], cells[1]))
    return rows


def fragments(message: str) -> list[str]:
    """The fixed fragments of ``message`` (two words or more) that the code must contain."""
    pieces = (piece.strip(" ,.()") for piece in _CUTS.split(message))
    return [piece for piece in pieces if len(piece.split()) >= _MIN_WORDS]


def _literal_texts(path: Path) -> list[str]:
    """The string literals of a Python file; an f-string's fields cut it (``\\0``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append(
                "".join(
                    part.value
                    if isinstance(part, ast.Constant) and isinstance(part.value, str)
                    else "\0"
                    for part in node.values
                )
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
    return found


@cache
def code_text() -> str:
    """Every string literal of the node's code, ``\\0``-separated."""
    return "\0".join(text for path in _code_files() for text in _literal_texts(path))


def _code_files() -> list[Path]:
    return sorted(path for package in SOURCE_PACKAGES for path in (REPO / package).rglob("*.py"))


@cache
def code_source() -> str:
    """The node's code as text."""
    return "\n".join(path.read_text(encoding="utf-8") for path in _code_files())


def in_code(fragment: str) -> bool:
    """``fragment`` is text of one string literal (an f-string field may be empty)."""
    return fragment in code_text() or fragment in code_text().replace("\0", "")


@cache
def _tests_text() -> str:
    """Every string literal and line of the test files, ``\\0``-separated."""
    texts: list[str] = []
    for path in _test_files():
        texts.extend(_literal_texts(path))
        texts.append(path.read_text(encoding="utf-8"))
    return "\0".join(texts)


@cache
def _asserted_pieces() -> frozenset[str]:
    """The fixed fragments of the tests' string literals (three words or more).

    A test's literal is cut as the table's messages are (``fragments``), so that
    ``"missing or not a valid UID"`` asserts the message's ``"is missing or not a
    valid"``.
    """
    return frozenset(
        fragment
        for path in _test_files()
        for text in _literal_texts(path)
        for piece in text.split("\0")
        for fragment in fragments(piece)
        if len(fragment.split()) >= _MIN_ASSERTED_WORDS
    )


def _test_files() -> list[Path]:
    return [path for path in sorted((REPO / "tests").rglob("*.py")) if path.resolve() != SELF]


def is_asserted(checked: list[str]) -> bool:
    """A test's literal holds one of the fragments, or is a piece of one (3+ words)."""
    return any(fragment in _tests_text() for fragment in checked) or any(
        piece in fragment for fragment in checked for piece in _asserted_pieces()
    )


def _assertion_problem(item: str, asserted: bool) -> list[str]:
    """The problem when ``item`` is asserted by no test (or is, though listed as not yet)."""
    if asserted != (item in NOT_YET_ASSERTED):
        return []
    if asserted:
        return [f"{item!r} is asserted by a test: remove it from NOT_YET_ASSERTED"]
    return [f"{item!r} is not asserted in any test"]


def _item_problems(item: str) -> list[str]:
    """What is wrong with one quoted item of the message column (empty: nothing)."""
    if _ERROR_CLASS.match(item):
        defined = re.search(rf"^class {item}\(", code_source(), re.MULTILINE)
        problems = [] if defined else [f"error class {item!r} is not defined in the code"]
        return problems + _assertion_problem(item, item in _tests_text())
    if _EVENT.match(item):
        emitted = f"\0{item}\0" in f"\0{code_text()}\0"
        problems = [] if emitted else [f"event {item!r} is not a string in the code"]
        return problems + _assertion_problem(item, item in _tests_text())
    checked = fragments(item)
    if not checked:
        return [f"{item!r} has no fixed fragment of {_MIN_WORDS} words to check"]
    problems = [
        f"{fragment!r} (from {item!r}) is not in the code"
        for fragment in checked
        if not in_code(fragment)
    ]
    return problems + _assertion_problem(item, is_asserted(checked))


def _problems(symptom: str, cell: str) -> list[str]:
    quoted = _QUOTED.findall(cell)
    if not quoted and cell.strip("() ").lower() not in {"none", ""}:
        return [f"row {symptom!r}: no quoted message: {cell}"]
    return [f"row {symptom!r}: {problem}" for item in quoted for problem in _item_problems(item)]


def test_the_table_has_rows() -> None:
    rows = troubleshooting_rows(GUIDE.read_text(encoding="utf-8"))
    assert len(rows) >= 20, rows
    assert all(symptom for symptom, _ in rows)


def test_every_message_is_emitted_by_the_code_and_asserted_by_a_test() -> None:
    rows = troubleshooting_rows(GUIDE.read_text(encoding="utf-8"))
    problems = [problem for symptom, cell in rows for problem in _problems(symptom, cell)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "calling AE 'CT_ROOM2' is not in the allow-list",
            ["calling", "is not in the allow-list"],
        ),
        (
            "wbdwi serve: cannot start: DICOM port 11112 on 0.0.0.0 (node.port): already in use",
            ["wbdwi serve", "cannot start", "port", "on", "", "already in use"],
        ),
        (
            "job store .../jobs.sqlite has schema version 2; this node expects 1",
            ["job store", "has schema version", "this node expects"],
        ),
        (
            "C-STORE association with PACS@pacs:104 as WBDWI failed (rejected: <the reason>)",
            ["association with", "as", "failed", "rejected", ""],
        ),
    ],
)
def test_fragments_are_the_fixed_text(message: str, expected: list[str]) -> None:
    assert fragments(message) == [f for f in expected if len(f.split()) >= _MIN_WORDS]


def test_the_not_yet_asserted_entries_are_quoted_in_the_table() -> None:
    quoted = {
        item
        for _, cell in troubleshooting_rows(GUIDE.read_text(encoding="utf-8"))
        for item in _QUOTED.findall(cell)
    }
    assert quoted >= NOT_YET_ASSERTED, NOT_YET_ASSERTED - quoted


def test_a_reworded_message_is_caught() -> None:
    row = (
        "| x | `association_rejected`, reason `calling AE 'X' is not on the list of friends` | y |"
    )
    problems = [
        p
        for s, c in troubleshooting_rows(f"\n## 11. Troubleshooting\n{row}\n")
        for p in _problems(s, c)
    ]
    assert any("not on the list of friends" in problem for problem in problems), problems


def test_an_event_missing_from_the_code_is_caught() -> None:
    row = "| x | `association_welcomed_warmly` | y |"
    problems = [
        p
        for s, c in troubleshooting_rows(f"\n## 11. Troubleshooting\n{row}\n")
        for p in _problems(s, c)
    ]
    assert problems and "not a string in the code" in problems[0], problems
