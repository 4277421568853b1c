"""docs/guide/ pages as scripts: page text -> the ordered steps a test runs (no I/O here).

A guide page is read by a newcomer and run by the tests, so it cannot rot. The rules a page
follows (which fenced blocks write files, which run, how expected output is matched, the
``<!-- guide: ... -->`` directives) are in /work/notes/guide-convention.md and, for
contributors, at the end of docs/guide/README.md. This module only turns the text into steps;
tests/guide/runner.py executes them. Anything the parser does not understand is a
:class:`GuideSyntaxError` naming the line, so a sample cannot silently go unrun.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

# Languages a page may use. ``mermaid`` is a picture (checked by nobody); ``output`` is what the
# block before it prints. Every other block is executed, written or parsed.
EXECUTED = ("sh", "python", "toml", "elixir", "sql")
LANGUAGES = (*EXECUTED, "output", "mermaid")
# Which comment starts the path line of a file block, per language.
_PATH_COMMENT = {"python": "#", "toml": "#", "elixir": "#", "sql": "--"}

ELIXIR_MARKER = "<!-- guide: elixir -->"
START_APP = "<!-- guide: start the Elixir app -->"
_START_APP = re.compile(r"^start the Elixir app(?::(?P<env>.*))?$")
MARKER_LINES = 5  # the elixir marker must be within the page's first lines

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*guide:\s*(?P<body>.*?)\s*-->\s*$")
_PATH = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*\.[A-Za-z0-9]+$")
_EXITS = re.compile(r"#\s*exits\s+(?P<status>\d+)\s*$")
_EXPORT = re.compile(r"^export\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
_DATABASE_VARIABLES = ("BRIDGE_DATABASE_URL", "DATABASE_URL")


class GuideSyntaxError(ValueError):
    """A page the runner cannot run as written: the message starts with ``page:line:``."""


@dataclass(frozen=True)
class Expected:
    """An ``output`` block: what the last command of the block before it prints."""

    line: int
    text: str


@dataclass(frozen=True)
class WriteFile:
    """A block whose first line names a relative path: that file gets the block's text.

    ``elixir`` files are written under the page's Elixir app directory, others under the
    current directory of the page."""

    line: int
    language: str
    path: str
    text: str


@dataclass(frozen=True)
class Command:
    """One command line of an ``sh`` block.

    ``kind``: ``run`` (``bash -c``), ``background`` (ends in ``&``), ``export`` (sets ``name``
    to ``value`` for later commands), ``database`` (an export of the database URL the reader
    sets: shown, not applied, the page keeps its own database), ``cd``, ``pip`` (not run: the
    test environment installed the package)."""

    line: int
    text: str
    kind: str = "run"
    exits: int = 0
    name: str = ""
    value: str = ""


@dataclass(frozen=True)
class Shell:
    line: int
    commands: tuple[Command, ...]
    expected: Expected | None = None


@dataclass(frozen=True)
class RunPython:
    """A ``python`` block with no path line: ``python -`` in the current directory."""

    line: int
    code: str
    expected: Expected | None = None


@dataclass(frozen=True)
class ParseElixir:
    """An ``elixir`` block: at least parsed (``Code.string_to_quoted!``)."""

    line: int
    code: str
    path: str | None


@dataclass(frozen=True)
class StartElixirApp:
    """``<!-- guide: start the Elixir app -->``, optionally ``…: NAME=value …``: variables for
    the stand-in app only (the config a real app has in its config files), not shown to the
    reader."""

    line: int
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Skipped:
    line: int
    language: str
    reason: str


Step = WriteFile | Shell | RunPython | ParseElixir | StartElixirApp | Skipped


@dataclass(frozen=True)
class Page:
    name: str
    elixir: bool
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        return tuple(step for step in self.steps if isinstance(step, Skipped))


@dataclass
class _Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip: str | None


def parse_page(name: str, text: str) -> Page:
    """The steps of page ``name`` (used in messages) in document order."""
    lines = text.splitlines()
    elixir = any(line.strip() == ELIXIR_MARKER for line in lines[:MARKER_LINES])
    steps: list[Step] = []
    pending_skip: str | None = None
    last_runnable: int | None = None  # index in steps of the sh/python block before an output
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        directive = _DIRECTIVE.match(line)
        if directive:
            body = directive.group("body")
            if body == "elixir":
                if index >= MARKER_LINES:
                    raise _error(name, number, f"{ELIXIR_MARKER} belongs in the first lines")
            elif body.startswith("skip:"):
                reason = body[len("skip:") :].strip()
                if not reason:
                    raise _error(name, number, "a skip needs its reason: <!-- guide: skip: WHY -->")
                pending_skip = reason
            elif _START_APP.match(body):
                if not elixir:
                    raise _error(
                        name, number, f"{START_APP} needs {ELIXIR_MARKER} on the first lines"
                    )
                steps.append(StartElixirApp(number, _app_env(name, number, body)))
                last_runnable = None
            else:
                raise _error(name, number, f"unknown guide directive {line.strip()!r}")
            index += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if line.strip() and pending_skip is not None:
                raise _error(name, number, "a skip directive must come right before its block")
            index += 1
            continue
        block, index = _read_block(name, lines, index, fence, pending_skip)
        pending_skip = None
        if block.language == "output":
            if block.skip is not None:
                raise _error(name, block.line, "skip the block before an output, not the output")
            last_runnable = _attach_output(name, steps, last_runnable, block)
            continue
        last_runnable = None
        if block.skip is not None:
            steps.append(Skipped(block.line, block.language, block.skip))
            last_runnable = len(steps) - 1
            continue
        step = _step(name, block)
        if step is None:
            continue
        steps.append(step)
        if isinstance(step, Shell | RunPython):
            last_runnable = len(steps) - 1
    if pending_skip is not None:
        raise _error(name, len(lines), "a skip directive with no block after it")
    return Page(name, elixir, tuple(steps))


def _app_env(name: str, number: int, body: str) -> tuple[tuple[str, str], ...]:
    found = _START_APP.match(body)
    assert found is not None
    pairs = []
    for word in (found.group("env") or "").split():
        variable, equals, value = word.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
            raise _error(name, number, f"{word!r}: the app's variables are NAME=value")
        pairs.append((variable, value))
    return tuple(pairs)


def _read_block(
    name: str, lines: list[str], start: int, fence: re.Match[str], skip: str | None
) -> tuple[_Block, int]:
    indent, ticks = fence.group("indent"), fence.group("ticks")
    language = fence.group("info").strip()
    number = start + 1
    if not language:
        raise _error(name, number, f"a code block needs a language ({', '.join(LANGUAGES)})")
    if language not in LANGUAGES and skip is None:
        raise _error(
            name,
            number,
            f"the runner does not know ```{language} blocks (known: {', '.join(LANGUAGES)}; "
            "or put <!-- guide: skip: REASON --> before it)",
        )
    body: list[str] = []
    index = start + 1
    while index < len(lines):
        line = lines[index]
        if line.strip() == ticks and line.startswith(indent):
            return _Block(number, language, "".join(s + "\n" for s in body), skip), index + 1
        body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
        index += 1
    raise _error(name, number, "a code block that is never closed")


def _attach_output(name: str, steps: list[Step], last: int | None, block: _Block) -> int | None:
    if last is None:
        raise _error(
            name, block.line, "an output block must come right after an sh or python block"
        )
    before = steps[last]
    if isinstance(before, Skipped):
        return None  # the block it belongs to is not run, so neither is its check
    expected = Expected(block.line, block.text)
    if isinstance(before, Shell):
        if not before.commands or before.commands[-1].kind != "run":
            raise _error(
                name, block.line, "the block before this output must end with a command that runs"
            )
        steps[last] = Shell(before.line, before.commands, expected)
    elif isinstance(before, RunPython):
        steps[last] = RunPython(before.line, before.code, expected)
    return None  # one output per block


def _step(name: str, block: _Block) -> Step | None:
    language = block.language
    if language == "mermaid":
        return None
    if language == "sh":
        return Shell(block.line, tuple(_commands(name, block)))
    first = block.text.split("\n", 1)[0].strip()
    path = _path_of(language, first)
    if language == "elixir":
        if path is None and first.startswith("# ") and "/" in first:
            raise _error(name, block.line, f"{first!r} is not a relative file path")
        return ParseElixir(block.line, block.text, path)
    if path is not None:
        return WriteFile(block.line, language, path, block.text)
    if language == "python":
        return RunPython(block.line, block.text)
    comment = _PATH_COMMENT[language]
    raise _error(
        name,
        block.line,
        f"a ```{language} block must start with a path line ({comment} relative/path.{language})",
    )


def _path_of(language: str, first: str) -> str | None:
    comment = _PATH_COMMENT.get(language)
    if comment is None or not first.startswith(comment + " "):
        return None
    candidate = first[len(comment) + 1 :].strip()
    if not _PATH.match(candidate):
        return None
    if PurePosixPath(candidate).is_absolute() or ".." in PurePosixPath(candidate).parts:
        return None
    return candidate


def _commands(name: str, block: _Block) -> list[Command]:
    commands: list[Command] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        start = index
        text = lines[index].rstrip()
        while text.endswith("\\") and index + 1 < len(lines):
            index += 1
            text = text[:-1].rstrip() + " " + lines[index].strip()
        index += 1
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        commands.append(_command(name, block.line + 1 + start, stripped))
    return commands


def _command(name: str, number: int, text: str) -> Command:
    exits = _EXITS.search(text)
    status = int(exits.group("status")) if exits else 0
    bare = _EXITS.sub("", text).rstrip()
    if bare.endswith("&") and not bare.endswith("&&"):
        if status:
            raise _error(name, number, "a background command cannot expect an exit status")
        return Command(number, bare[:-1].rstrip(), kind="background")
    words = bare.split()
    if words[0] == "pip" or words[:3] == ["python", "-m", "pip"]:
        return Command(number, bare, kind="pip")
    if words[0] == "cd":
        if len(words) != 2:
            raise _error(name, number, f"`{bare}`: cd takes one directory")
        return Command(number, bare, kind="cd", value=words[1])
    export = _EXPORT.match(bare)
    if export:
        variable = export.group("name")
        kind = "database" if variable in _DATABASE_VARIABLES else "export"
        return Command(number, bare, kind=kind, name=variable, value=export.group("value"))
    return Command(number, text, exits=status)


def _error(name: str, number: int, message: str) -> GuideSyntaxError:
    return GuideSyntaxError(f"{name}:{number}: {message}")


# Output matching --------------------------------------------------------------------------------

ELLIPSIS = "..."


def _normalise(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def output_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is what ``expected`` shows: lines compared without trailing spaces, a
    line ``...`` stands for any number of lines, ``...`` inside a line for any text."""
    pattern = ""
    for line in _normalise(expected):
        if line.strip() == ELLIPSIS:
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += "[^\n]*?".join(re.escape(part) for part in line.split(ELLIPSIS)) + r"\n"
    subject = "".join(line + "\n" for line in _normalise(actual))
    return re.fullmatch(pattern, subject) is not None


# pip lines --------------------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^(?:oban-bridge|oban_bridge|\.|git\+\S*oban-bridge\S*?)(?:\[(?P<extras>[a-z0-9_,-]+)\])?"
    r"(?:[<>=!~]=?[\w.*]+)?$"
)


def pip_problem(command: str, extras: set[str]) -> str | None:
    """Why ``pip install …`` does not install this project (with extras it has), or None."""
    words = [word.strip("'\"") for word in command.split()]
    if words[:3] == ["python", "-m", "pip"]:
        words = ["pip", *words[3:]]
    if words[:2] != ["pip", "install"]:
        return "only `pip install …` lines may appear (the runner does not run pip)"
    requirements = [word for word in words[2:] if not word.startswith("-")]
    if not requirements:
        return "it installs nothing"
    for requirement in requirements:
        found = _REQUIREMENT.match(requirement)
        if not found:
            return f"{requirement!r} is not this project (oban-bridge, or . from a clone)"
        named = set(filter(None, (found.group("extras") or "").split(",")))
        unknown = named - extras
        if unknown:
            missing, known = ", ".join(sorted(unknown)), ", ".join(sorted(extras))
            return f"{requirement!r}: no extra {missing} (has {known})"
    return None
