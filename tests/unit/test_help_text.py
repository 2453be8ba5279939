"""``wbdwi --help`` and every sub-command's ``--help`` are plain words.

The help is read by hospital IT in a terminal: no reStructuredText markup (````wbdwi
serve````, ``:mod:`...```, ``::`` blocks) from module docstrings, every argument
explained, and no reference to a file outside the repository. Each test runs the
real ``--help`` through :func:`service.cli.main`, for every command the parser
has (sub-commands of sub-commands included), so a command added later is checked
too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re

import pytest

from service.cli import COMMAND_MODULES, build_parser
from service.cli import main as wbdwi
from tests.unit.test_citations import references_outside

# What each pattern finds in help text, and the pattern.
MARKUP: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a backtick (reST or Markdown literal)", re.compile(r"`")),
    ("a reST role", re.compile(r":[a-z]+:`?[\w.~]")),
    ("a reST literal block marker", re.compile(r"\w::\s*$", re.MULTILINE)),
    ("a reST directive", re.compile(r"^\s*\.\. [\w-]+::", re.MULTILINE)),
    ("bold or emphasis markup", re.compile(r"(?<![\w*])\*\*?[A-Za-z][^*\n]*\*\*?(?![\w*])")),
    ("a reST link target", re.compile(r"\w_\b(?=[\s,.;)]|$)")),
)


def markup_in(text: str) -> list[str]:
    """What markup ``text`` has, as ``'what: matched text'`` (empty: plain)."""
    return [
        f"{what}: {match.group(0)!r}"
        for what, pattern in MARKUP
        for match in pattern.finditer(text)
    ]


def _sub_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's sub-commands by name (none for a parser without sub-commands)."""
    return {
        name: sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }


def _command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(words, parser)`` of the top-level command and every (nested) sub-command."""
    found = [(prefix, parser)]
    for name, sub in _sub_commands(parser).items():
        found.extend(_command_paths(sub, (*prefix, name)))
    return found


COMMANDS = _command_paths(build_parser())
COMMAND_IDS = [" ".join(("wbdwi", *words)) for words, _ in COMMANDS]


def help_output(words: tuple[str, ...]) -> str:
    """What ``wbdwi WORDS --help`` prints (it exits 0)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        wbdwi([*words, "--help"])
    assert exited.value.code == 0
    return out.getvalue()


def test_every_command_module_is_a_sub_command() -> None:
    names = {words[0] for words, _ in COMMANDS if words}
    assert set(COMMAND_MODULES) <= names
    assert len(COMMANDS) > len(COMMAND_MODULES)


@pytest.mark.parametrize(("words", "parser"), COMMANDS, ids=COMMAND_IDS)
def test_help_is_plain_words(words: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    text = help_output(words)
    assert text.startswith("usage: wbdwi"), text[:200]
    assert markup_in(text) == [], f"wbdwi {' '.join(words)} --help:\n{text}"


@pytest.mark.parametrize(("words", "parser"), COMMANDS, ids=COMMAND_IDS)
def test_help_cites_no_file_outside_the_repository(
    words: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    text = help_output(words)
    assert references_outside(text) == [], f"wbdwi {' '.join(words)} --help:\n{text}"


@pytest.mark.parametrize(("words", "parser"), COMMANDS, ids=COMMAND_IDS)
def test_every_argument_has_help(words: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    if words:
        assert parser.description, f"wbdwi {' '.join(words)} has no description"
    unexplained = [
        "/".join(action.option_strings) or str(action.metavar or action.dest)
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS
        and not (action.help or "").strip()
    ]
    assert unexplained == [], f"wbdwi {' '.join(words)}: arguments without help: {unexplained}"


# The other programs of the repository with a --help: ``python -m service.settings``
# and ``python -m service.demo`` (``make demo``).
OTHER_PROGRAMS = {
    "python -m service.settings": "service.settings.docs",
    "python -m service.demo": "service.demo",
}


@pytest.mark.parametrize("program", sorted(OTHER_PROGRAMS))
def test_the_other_programs_help_is_plain_words(program: str) -> None:
    module = importlib.import_module(OTHER_PROGRAMS[program])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    text = out.getvalue()
    assert text.startswith(f"usage: {program}"), text[:200]
    assert markup_in(text) == [], text
    assert references_outside(text) == [], text


def test_log_format_is_explained() -> None:
    text = " ".join(help_output(("serve",)).split())
    assert "--log-format {auto,json,console} log lines as JSON" in text


@pytest.mark.parametrize(
    "text",
    [
        "``wbdwi serve``: run the node",
        "(see :mod:`service.history`)",
        "see :func:`run`",
        "Regenerate with::\n",
        ".. note:: read this",
        "**never** run two",
        "the `settings`_ page",
    ],
)
def test_markup_is_found(text: str) -> None:
    assert markup_in(text) != []


@pytest.mark.parametrize(
    "text",
    [
        "usage: wbdwi serve [-h] [--config FILE]",
        "--snr SNR   muscle SNR at the lowest b; 0 = none",
        "(default: the node's)",
        "data folder from --data-dir, else ./wbdwi-data; WBDWI_<SECTION>_<KEY>",
        "AET@HOST:PORT   the peer to echo (default: this node)",
        "auto: GPU when CuPy and a CUDA device are present (default); gpu; cpu",
        "b = 50 s/mm2, ADC in um2/s; 0x10..0xFF",
        "node_data_dir and calling_ae_allow",
    ],
)
def test_plain_text_is_not_flagged(text: str) -> None:
    assert markup_in(text) == []
