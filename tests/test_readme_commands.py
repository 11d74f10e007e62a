"""Every command the README shows runs as written.

The shell blocks of README.md (```sh, bash, shell, console) are read line by line and
each command is checked against the real thing, without running it:

* `gatewayd ...` is parsed by the CLI's own parser (`gatewayd.cli.build_parser`): the
  subcommands exist, every flag is known, choices and types hold, required arguments are
  there;
* `make TARGET` must be a target of the Makefile (`make -n TARGET` succeeds);
* `python SCRIPT.py --flag ...`: the script exists and its `--help` names every flag;
* anything else must at least be a program on PATH.

Commands quoted inline in the prose (`gatewayd ...` between backticks) are checked by name:
the subcommand path exists and every `--flag` belongs to it (placeholders there are often
not valid values). A README command that does not exist fails this test.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.cli import build_parser
from gatewayd.cli.common import CliError

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELL_FENCES = {"sh", "bash", "shell", "console"}
# Tokens after which the rest of a line is the shell's business, not the command's.
SHELL_OPERATORS = {">", ">>", "<", "|", "||", "&&", ";", "&", "2>", "2>&1"}


def shell_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for every command line of the shell code blocks."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip().lower()
            continue
        if fence not in SHELL_FENCES:
            continue
        if fence == "console":
            if not stripped.startswith("$ "):
                continue  # output, not a command
            stripped = stripped[2:]
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        command = (pending + stripped).strip()
        pending = ""
        if command and not command.startswith("#"):
            out.append((start, command))
    return out


def inline_gatewayd_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for every `gatewayd ...` quoted inline outside code blocks."""
    out: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            in_fence = not in_fence
            continue
        if not in_fence:
            out += [(number, m) for m in re.findall(r"`(gatewayd [^`]+)`", line)]
    return out


def words(command: str) -> list[str]:
    """The command's own words: comments dropped, cut at the first redirection or pipe."""
    tokens = shlex.split(command, comments=True)
    for i, token in enumerate(tokens):
        if token in SHELL_OPERATORS or token.startswith((">", "2>")):
            return tokens[:i]
    return tokens


def problems(command: str) -> list[str]:
    """What is wrong with a README command, as run from the repository root; [] if nothing."""
    argv = words(command)
    if not argv:
        return [f"no command in {command!r}"]
    program, args = argv[0], argv[1:]
    if program == "gatewayd":
        return _gatewayd_problems(args)
    if program == "make":
        return _make_problems(args)
    if program in ("python", "python3") and args and args[0].endswith(".py"):
        return _script_problems(args[0], args[1:])
    if shutil.which(program) is None and not (ROOT / ".venv" / "bin" / program).exists():
        return [f"{program}: no such program"]
    return []


def inline_problems(command: str) -> list[str]:
    """A prose mention: the subcommand path must exist and every --flag must belong to it."""
    argv = [w.strip("[]") for w in words(command)]
    assert argv[0] == "gatewayd"
    parser: argparse.ArgumentParser = build_parser()
    path = ["gatewayd"]
    rest = argv[1:]
    while rest and (choices := _subcommands(parser)):
        if rest[0].startswith("-"):
            break
        if rest[0] not in choices:
            return [f"{' '.join(path)}: no subcommand {rest[0]!r} (there are: {', '.join(sorted(choices))})"]
        parser = choices[rest[0]]
        path.append(rest.pop(0))
    if _subcommands(parser) and not rest:
        return []  # a command group named as a whole (`gatewayd audit`)
    known = _flags(parser)
    return [
        f"{' '.join(path)}: no flag {flag}"
        for flag in (w.split("=", 1)[0] for w in rest if w.startswith("--"))
        if flag not in known
    ]


def _gatewayd_problems(args: list[str]) -> list[str]:
    try:
        build_parser().parse_args(args)
    except CliError as exc:
        return [str(exc)]
    except SystemExit as exc:  # --help and friends: they run, but print instead of acting
        return [] if exc.code == 0 else [f"gatewayd exited {exc.code}"]
    return []


def _make_problems(args: list[str]) -> list[str]:
    targets = [a for a in args if not a.startswith("-") and "=" not in a] or ["all"]
    out = []
    for target in targets:
        done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            out.append(f"make {target}: {done.stderr.strip() or 'fails'}")
    return out


def _script_problems(script: str, args: list[str]) -> list[str]:
    if not (ROOT / script).is_file():
        return [f"{script}: no such file"]
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    if not flags:
        return []
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return [f"{script} --help failed: {done.stderr.strip().splitlines()[-1:]}"]
    return [f"{script}: no flag {flag}" for flag in flags if not re.search(re.escape(flag) + r"\b", done.stdout)]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


TEXT = README.read_text()
COMMANDS = shell_commands(TEXT)
INLINE = inline_gatewayd_commands(TEXT)


@pytest.mark.parametrize("line,command", COMMANDS, ids=[f"README:{n}" for n, _ in COMMANDS])
def test_every_command_in_a_readme_code_block_runs_as_written(line, command):
    assert problems(command) == [], f"README.md line {line}: {command}"


@pytest.mark.parametrize("line,command", INLINE, ids=[f"README:{n}" for n, _ in INLINE])
def test_every_gatewayd_command_quoted_in_the_prose_exists(line, command):
    assert inline_problems(command) == [], f"README.md line {line}: {command}"


def test_the_readme_has_commands_to_check():
    """Guards the extraction itself: a README whose blocks are no longer recognised would
    otherwise pass with nothing checked."""
    programs = {words(c)[0] for _, c in COMMANDS}
    assert {"gatewayd", "make"} <= programs
    assert sum(1 for _, c in COMMANDS if c.startswith("gatewayd ")) >= 10
    assert INLINE


@pytest.mark.parametrize(
    "command",
    [
        "gatewayd control status",
        "gatewayd activate policy 2 --reson typo",
        "gatewayd activate policy two --reason x",
        "gatewayd rollback policy",  # --reason is required
        "make no-such-target",
        "python bench/no_such_script.py --flips 3",
        "python bench/rollback_drill.py --no-such-flag 3",
        "no-such-program --version",
    ],
)
def test_a_command_that_does_not_exist_is_caught(command):
    assert problems(command)


@pytest.mark.parametrize(
    "command",
    ["gatewayd control status", "gatewayd admin --hots H", "gatewayd audit verifyy"],
)
def test_a_prose_mention_that_does_not_exist_is_caught(command):
    assert inline_problems(command)


def test_comments_redirections_and_console_prompts_are_not_part_of_the_command():
    text = "```console\n$ gatewayd status  # replicas\nin sync\n```\n```sh\ngatewayd audit export > x.jsonl\n```\n"
    assert shell_commands(text) == [(2, "gatewayd status  # replicas"), (6, "gatewayd audit export > x.jsonl")]
    assert words("gatewayd audit export --from T > records.jsonl") == ["gatewayd", "audit", "export", "--from", "T"]
    assert words('gatewayd activate policy 2 --reason "..."   # flip') == [
        "gatewayd",
        "activate",
        "policy",
        "2",
        "--reason",
        "...",
    ]
