"""Reading the README (and the examples' READMEs) the way its tests do: fenced blocks found by
the heading they sit under, the command lines of shell blocks and of the prose, and a copy of the
checkout as a fresh clone would have it. Shared by ``tests/test_readme.py`` and the examples'
tests, so no test module imports another.
"""

from __future__ import annotations

import itertools
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLONE",
    "README",
    "ROOT",
    "SHELL",
    "Block",
    "block",
    "blocks",
    "code_blocks",
    "command_lines",
    "copy_checkout",
    "inline_commands",
    "readme_commands",
    "synopsis_commands",
]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLONE = "path/to/mpsflow"
"""The README's placeholder for the reader's clone."""


# -- reading the README ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    """A fenced code block: the heading it sits under, its language, its text (dedented)."""

    heading: str
    lang: str
    text: str


def code_blocks(path: Path = README) -> list[Block]:
    blocks: list[Block] = []
    heading = ""
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            indent = len(line) - len(line.lstrip())
            body = list(itertools.takewhile(lambda x: not x.strip().startswith("```"), lines))
            text = "\n".join(b[indent:] for b in body) + "\n"
            blocks.append(Block(heading, stripped.removeprefix("```").strip(), text))
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return blocks


def blocks(heading: str, lang: str = "python", path: Path = README) -> list[str]:
    """The ``lang`` blocks under ``heading``, in order."""
    found = [b.text for b in code_blocks(path) if b.heading == heading and b.lang == lang]
    assert found, f"{path.name}: no {lang} block under {heading!r}"
    return found


def block(heading: str, lang: str = "python", path: Path = README) -> str:
    """The one ``lang`` block under ``heading``."""
    [found] = blocks(heading, lang, path)
    return found


SHELL = ("bash", "sh", "shell", "console")


def command_lines(text: str) -> list[str]:
    """A shell block's commands: one per logical line, comments and blank lines left out."""
    commands: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            commands.append(line)
    return commands


def synopsis_commands(text: str) -> list[tuple[str, str]]:
    """``(command words, whole usage line)`` for each ``mpsflow …`` line of the synopsis."""
    usages: list[str] = []
    for line in text.splitlines():
        if line.startswith("mpsflow "):
            usages.append(line)
        elif line.strip() and usages:
            usages[-1] += " " + line.strip()
    result = []
    for usage in usages:
        words = list(itertools.takewhile(lambda w: re.fullmatch(r"[a-z][a-z-]*", w), usage.split()))
        result.append((" ".join(words), usage))
    return result


def inline_commands(path: Path = README) -> list[str]:
    """Commands in the prose's inline code (``mpsflow …``, ``python …``, ``pip …``, …).

    Placeholders with ``…`` (``mpsflow …`` for "any command") are not commands.
    """
    prose = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    spans = re.findall(r"`([^`\n]+)`", prose)
    starts = re.compile(r"(\.venv/bin/)?(mpsflow|python3?|bash|pip|\.)\s")
    return [s for s in spans if starts.match(s) and "…" not in s]


def readme_commands() -> list[str]:
    """Every command the README shows, as ``COMMANDS`` keys."""
    commands: list[str] = []
    for b in code_blocks():
        if b.lang in SHELL:
            commands += command_lines(b.text)
        elif b.heading == "Command line" and not b.lang:
            commands += [words for words, _ in synopsis_commands(b.text)]
    return commands + inline_commands()


def copy_checkout(destination: Path) -> Path:
    """The checkout as a fresh clone would have it (no venvs, caches or build output)."""
    shutil.copytree(
        ROOT,
        destination,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv*",
            "__pycache__",
            ".*_cache",
            ".hypothesis",
            "build",
            "dist",
            "*.egg-info",
            "out",
            "mpsflow-dead-letters*",
            "mpsflow-dedup.sqlite3*",
        ),
    )
    return destination
