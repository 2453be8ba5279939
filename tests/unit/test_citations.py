"""Code and documents cite papers and documents in the repository, never files outside it.

A docstring that says "see seed 000" or "``../shared/research/clinical.md``"
points a reader to a file that a clone of this repository does not have. The
sources are cited as papers (authors, journal, year, DOI or PMCID), under the
short names of the sources table in ``docs/algorithm.md``, or as documents in
``docs/``. This test reads every tracked ``.py``, ``.md`` and ``.toml`` file (the
example configuration carries the settings' sources) and names the file and line
of each reference to something outside the repository. The same holds for what
the programs print: every ``wbdwi ... --help`` (no such reference, and no reST
markup from a docstring; ``tests/unit/test_help_text.py`` has the details).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SELF = Path(__file__).resolve()
SUFFIXES = (".py", ".md", ".toml")

# What each pattern finds, and the pattern (case-insensitive).
OUTSIDE: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (what, re.compile(pattern, re.IGNORECASE))
    for what, pattern in (
        ("a seed document by number", r"\bseeds?[ _-]?\(?\d{3}\b"),
        ("the seeds folder", r"\bseeds/"),
        ("a seed file name", r"\b\d{3}_[0-9a-f]{16}\.txt\b"),
        ("the shared folder", r"(?:\.\./|/|\b)shared/(?:seeds|research|[A-Z]+\.md)"),
        ("a parent-folder path to shared files", r"(?:\.\./)+shared\b"),
        ("a research note", r"\bresearch/[\w.-]+\.md\b"),
        ("a research note", r"\bclinical\.md\b"),
        ("a project note", r"\b(?:DESIGN|STYLE|COMMON)\.md\b"),
        ("an absolute path on a workstation", r"(?<![\w.])/(?:work|home|Users)/\w"),
    )
)

# Leading comment and docstring markers removed before a wrapped line is joined
# to the one above it ("seed\n    000" is one reference).
_CONTINUATION = re.compile(r"^\s*(?:#+|//|\*|>)?\s*")


def _tracked_files() -> list[Path]:
    """Tracked ``.py``, ``.md`` and ``.toml`` files (all such files without git)."""
    git = shutil.which("git")
    if git is not None and (REPO / ".git").exists():
        listed = subprocess.run(
            [git, "ls-files", "-z", "--", *(f"*{suffix}" for suffix in SUFFIXES)],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8")
        files = [REPO / name for name in listed.split("\0") if name]
    else:
        skip = {".git", ".venv", "node_modules", "__pycache__", "build", "dist"}
        files = [
            path
            for path in sorted(REPO.rglob("*"))
            if path.suffix in SUFFIXES and not skip & set(path.relative_to(REPO).parts)
        ]
    return [path for path in files if path.is_file() and path.resolve() != SELF]


def references_outside(text: str) -> list[tuple[int, str, str]]:
    """``(line number, what, matched text)`` of each reference to a file outside the repository.

    A reference wrapped over two lines is reported on the line where it starts.
    """
    lines = text.splitlines()
    found: list[tuple[int, str, str]] = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        joined = f"{line} {_CONTINUATION.sub('', following, count=1)}"
        for what, pattern in OUTSIDE:
            for match in pattern.finditer(joined):
                if match.start() < len(line):
                    found.append((index + 1, what, match.group(0)))
    return found


def test_no_tracked_file_cites_a_file_outside_the_repository() -> None:
    files = _tracked_files()
    assert len(files) > 50, f"only {len(files)} files found under {REPO}"
    problems = [
        f"{path.relative_to(REPO)}:{number}: {what} ({matched!r}); cite the paper "
        "(see the sources table in docs/algorithm.md) or a document in the repository"
        for path in files
        for number, what, matched in references_outside(path.read_text(encoding="utf-8"))
    ]
    assert problems == [], "\n".join(problems)


def test_no_help_output_cites_a_file_outside_the_repository_or_shows_markup() -> None:
    # Imported here: test_help_text imports references_outside from this module.
    from tests.unit.test_help_text import COMMANDS, help_output, markup_in

    problems = [
        f"wbdwi {' '.join(words)} --help: {problem}"
        for words, _ in COMMANDS
        for text in [help_output(words)]
        for problem in [
            *(f"{what} ({matched!r})" for _, what, matched in references_outside(text)),
            *markup_in(text),
        ]
    ]
    assert len(COMMANDS) > 10
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "text",
    [
        "The workflow is seed 000's.",
        "as exam 4 in Seed 000",
        "(seeds 000-002)",
        "read ``../shared/research/clinical.md``",
        "see shared/seeds/README.md",
        "the case study in `seeds/000_*.txt`",
        "000_9870dd7ecd330161.txt",
        "facts in research/clinical.md",
        "b50, DESIGN.md; perfusion",
        "STYLE.md says so",
        "written to /work/main/out",
        "see /home/alice/notes.txt",
        "the baselines of seed\n    000 gave 1127",
        "# the baselines of seed\n# 000 gave 1127",
    ],
)
def test_references_outside_the_repository_are_found(text: str) -> None:
    found = references_outside(text)
    assert found, text
    assert found[0][0] == 1


@pytest.mark.parametrize(
    "text",
    [
        "Vanel et al., Skeletal Radiol 2007;36:895-898 (doi:10.1007/s00256-007-0344-0)",
        "see docs/algorithm.md, section 8",
        "rng = np.random.default_rng(seed)",
        "make_phantom('reference', seed=1)",
        "measured on `reference` (seed 1, SNR 40)",
        "for seed in seeds:",
        "wbdwi phantom --out /tmp/ref",
        "the UID seed of the software version",
        "shared helpers live in tests/helpers/",
    ],
)
def test_citations_inside_the_repository_are_not_flagged(text: str) -> None:
    assert references_outside(text) == []
