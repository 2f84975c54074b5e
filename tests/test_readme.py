"""The README tells the truth about the commands (nothing is run, no model is built).

* its first two commands are the commands of ``.ci/run`` (what CI runs in a fresh clone), character for character;
* every ``mgld <command>`` in its shell code blocks and inline code exists (``mgld.cli.COMMANDS``), every ``--flag``
  given to a command is one of that command's argparse options (values checked against ``choices`` and ``type``
  where they are literal), and every ``key=value`` override loads with that command's schema (``load_config``,
  ``load_train_config``);
* every inline ``--flag`` is an option of a command the same README section names, and every inline config key
  (``sampling.pixel_tiling``, ``stage1.mid_from_sd: false``, ``trainer.precision=bf16-mixed``) exists in the
  inference or training schema, with its literal values accepted.

The parsers are the real ones: each command's ``main`` is called with argparse's ``parse_known_args`` patched to
hand back the parser before anything runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from mgld.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
GLOBAL_FLAGS = {"--debug", "--help", "-h", "--version", "-V"}
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")
DOTTED_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")  # an option value holding overrides (--compare "A" "B")
# values that stand for something (N, FILE, I/N, $VAR, <seq>, ...) are not checked against types or choices
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_/]*$|[$<…]|\.\.\.")
SEPARATORS = {"&&", "||", ";", "|"}


# --------------------------------------------------------------------------- reading the README


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block, in order."""
    return [(m.group(1).strip().lower(), m.group(2))
            for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, flags=re.M | re.S)]


def without_fences(text: str) -> str:
    return re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)


def sections(text: str) -> list[tuple[str, str]]:
    """``(heading, body)`` per ``## `` section (the text before the first heading has heading '')."""
    parts = re.split(r"^## (.*)$", text, flags=re.M)
    return [("", parts[0])] + list(zip(parts[1::2], parts[2::2]))


def inline_spans(text: str, *, authors: bool = True) -> list[str]:
    """Inline code spans outside fenced blocks; ``\\|`` (a pipe escaped inside a table) becomes ``|``.
    ``authors=False`` leaves out spans that name the authors' own code, written "the authors' `--dec_w`"."""
    spans, prose = [], without_fences(text)
    for m in re.finditer(r"`([^`\n]+)`", prose):
        if authors or not prose[:m.start()].endswith("authors' "):
            spans.append(m.group(1).replace("\\|", "|").strip())
    return spans


def shell_commands(body: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, split at ``&&`` / ``;`` / ``|``."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for token in tokens:
            if token in SEPARATORS:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def mgld_invocations(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """``(command, arguments)`` of every ``mgld <command>`` (also ``-m mgld``, and inside quoted strings such as
    ``sbatch --wrap '...'``) in a token list."""
    found = []
    for i, token in enumerate(tokens):
        if token == "mgld":
            rest = tokens[i + 1:]
            while rest and rest[0] == "--debug":
                rest = rest[1:]
            if rest and not rest[0].startswith("-") and not rest[0].startswith("<"):
                found.append((rest[0], rest[1:]))
            return found
        if re.search(r"(^|\s)mgld\s", token):
            for command in shell_commands(token):
                found += mgld_invocations(command)
    return found


# --------------------------------------------------------------------------- the real parsers and schemas


class _Parser(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


@cache
def parser_of(command: str) -> argparse.ArgumentParser:
    """The argparse parser of ``mgld <command>``: its ``main`` is run until it parses its arguments."""
    module = importlib.import_module(f"mgld.cli.{COMMANDS[command][0]}")

    def capture(self, args=None, namespace=None):
        raise _Parser(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        try:
            module.main([], prog=f"mgld {command}")
        except _Parser as found:
            return found.parser
    raise AssertionError(f"mgld {command}: main() returned without parsing its arguments")


def _is_placeholder(value: str) -> bool:
    return bool(PLACEHOLDER.search(value))


def check_value(command: str, flag: str, action: argparse.Action, value: str) -> list[str]:
    """Problems with a literal ``value`` of ``flag`` (``a|b`` lists alternatives)."""
    if _is_placeholder(value):
        return []
    problems = []
    for alternative in value.split("|"):
        try:
            converted = action.type(alternative) if callable(action.type) else alternative
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            problems.append(f"mgld {command} {flag} {alternative!r}: {err}")
            continue
        if action.choices is not None and converted not in action.choices:
            problems.append(f"mgld {command} {flag} {alternative!r}: not one of {list(action.choices)}")
    return problems


def _values_taken(action: argparse.Action, rest: list[str]) -> int:
    nargs = action.nargs
    if nargs == 0:
        return 0
    if nargs is None:
        return 1
    if isinstance(nargs, int):
        return nargs
    if nargs == "?":
        return 1 if rest and not rest[0].startswith("-") else 0
    n = 0  # "*" / "+"
    while n < len(rest) and not rest[n].startswith("-"):
        n += 1
    return n


def check_flags(command: str, args: list[str]) -> tuple[list[str], list[str], str | None]:
    """Problems with the flags of one command line, its ``key=value`` overrides, and its ``--config`` value."""
    parser = parser_of(command)
    problems, overrides, config = [], [], None
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d+(\.\d+)?", token):
            flag, eq, inline = token.partition("=")
            action = parser._option_string_actions.get(flag)
            if action is None:
                problems.append(f"mgld {command}: no option {flag}")
                i += 1
                continue
            values = [inline] if eq else args[i + 1:i + 1 + _values_taken(action, args[i + 1:])]
            i += 1 + (0 if eq else len(values))
            for value in values:
                if value and all(DOTTED_OVERRIDE.match(v) for v in value.replace(",", " ").split()):
                    overrides += value.replace(",", " ").split()  # e.g. benchmark --compare "A" "B"
                elif value:
                    problems += check_value(command, flag, action, value)
            if flag == "--config" and values:
                config = values[0]
            continue
        if OVERRIDE.match(token):
            overrides.append(token)
        i += 1
    return problems, overrides, config


def default_config(command: str) -> str | None:
    action = parser_of(command)._option_string_actions.get("--config")
    return action.default if action is not None else None


def load_problems(command: str, config: str | None, overrides: list[str]) -> list[str]:
    """Problems loading ``overrides`` with the schema of ``mgld <command>`` (one at a time, to name each)."""
    from mgld.config import load_config
    from mgld.training.config import load_train_config

    if not overrides:
        return []
    config = config or default_config(command)
    literal = [o for o in overrides if not _is_placeholder(o.partition("=")[2])]
    if command in ("train", "generate-latents"):
        def load(override):
            return load_train_config(config, [override])
    elif command in ("infer", "benchmark", "convert"):
        def load(override):
            return load_config(config, [override])
    else:
        return [f"mgld {command} takes no key=value overrides: {overrides}"]
    problems = []
    for override in overrides:
        if not key_exists(override.partition("=")[0]):
            problems.append(f"mgld {command} {override}: no such config key")
        elif override in literal:
            try:
                load(override)
            except Exception as err:  # noqa: BLE001 - any failure is the finding
                problems.append(f"mgld {command} --config {config} {override}: {err}")
    return problems


@cache
def schema_roots() -> tuple:
    from mgld.config import Config
    from mgld.training.config import Stage1TrainConfig, Stage2TrainConfig

    return Config(), Stage1TrainConfig(), Stage2TrainConfig()


def key_exists(key: str) -> bool:
    """Whether ``a.b.c`` names a field of the inference or a training schema."""
    for node in schema_roots():
        for part in key.split("."):
            if not (dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}):
                break
            node = getattr(node, part)
        else:
            return True
    return False


def literal_key_value_ok(key: str, value: str) -> bool:
    """Whether some schema accepts ``key=value``."""
    from mgld.config import load_config
    from mgld.training.config import load_train_config

    for load in (lambda o: load_config(None, [o]), lambda o: load_train_config("stage1", [o]),
                 lambda o: load_train_config("stage2", [o])):
        try:
            load(f"{key}={value}")
            return True
        except Exception:  # noqa: BLE001, S112 - try the next schema
            continue
    return False


# --------------------------------------------------------------------------- what the README shows


def readme() -> str:
    return README.read_text(encoding="utf-8")


def shell_invocations(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for language, body in fenced_blocks(text):
        if language in SHELL_LANGUAGES:
            for command in shell_commands(body):
                found += mgld_invocations(command)
    return found


def inline_invocations(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for span in inline_spans(text):
        if span.startswith("mgld ") or span.startswith("python -m mgld "):
            try:
                found += mgld_invocations(shlex.split(span))
            except ValueError:
                pass
    return found


SCHEMA_SECTIONS = ("model", "sampling", "flow", "decode", "chunk", "infer", "output", "init", "stage1", "data",
                   "optim", "trainer", "losses", "discriminator")
KEY = re.compile(rf"^(?:{'|'.join(SCHEMA_SECTIONS)})(?:\.\w+)+$")
FILE_SUFFIXES = (".yaml", ".yml", ".py", ".md", ".json", ".ckpt", ".pth", ".pt", ".safetensors", ".png", ".mp4")


def test_the_first_two_commands_are_those_of_ci_run():
    ci = [line for line in CI_RUN.read_text().splitlines()
          if line.strip() and not line.startswith("#") and not re.match(r"(set|cd|export|rm)\b", line)]
    blocks = [body.strip() for language, body in fenced_blocks(readme()) if language in SHELL_LANGUAGES]
    assert len(ci) == 2, ci
    assert blocks[:2] == ci
    assert "mgld infer --config tiny --input sample" in ci[0] and ci[1] == "pytest -q"


def test_every_command_shown_exists():
    invocations = shell_invocations(readme()) + inline_invocations(readme())
    assert len(invocations) > 30  # the parser found the README's commands
    unknown = sorted({name for name, _ in invocations if name not in COMMANDS})
    assert not unknown, f"README shows mgld commands that do not exist: {unknown}"
    shown = {name for name, _ in invocations}
    assert {"infer", "train", "evaluate", "download", "convert", "benchmark", "parity", "make-testset",
            "generate-latents", "bicubic"} <= shown


def test_every_flag_value_and_override_of_a_command_line_is_accepted():
    problems = []
    for name, args in shell_invocations(readme()) + inline_invocations(readme()):
        if name not in COMMANDS:
            continue
        flag_problems, overrides, config = check_flags(name, args)
        problems += flag_problems + load_problems(name, config, overrides)
    assert not problems, "\n".join(problems)


def test_every_inline_flag_belongs_to_a_command_of_its_section():
    problems = []
    for heading, body in sections(readme()):
        named = {name for name, _ in shell_invocations(body) + inline_invocations(body) if name in COMMANDS}
        candidates = sorted(named) or sorted(COMMANDS)
        for span in inline_spans(body, authors=False):
            if not span.startswith("-") or span.startswith("python") or span in GLOBAL_FLAGS:
                continue
            words = span.split()
            for flag in words[0].split("/"):
                accepted = False
                for command in candidates:
                    action = parser_of(command)._option_string_actions.get(flag)
                    value = words[1] if len(words) > 1 else ""
                    if action is not None and not (value and check_value(command, flag, action, value)):
                        accepted = True
                        break
                if not accepted and flag not in GLOBAL_FLAGS:
                    problems.append(f"section {heading!r}: `{span}` is not an option of mgld {'/'.join(candidates)}")
    assert not problems, "\n".join(problems)


def test_every_inline_config_key_exists_with_its_values():
    problems, checked = [], 0
    for span in inline_spans(readme()):
        for word in span.split():
            key, eq, value = word.partition("=")
            if not eq:
                key = word.rstrip(":,")
            if not KEY.match(key) or key.endswith(FILE_SUFFIXES):
                continue
            checked += 1
            if not key_exists(key):
                problems.append(f"`{span}`: no config key {key}")
            elif eq and not _is_placeholder(value) and not literal_key_value_ok(key, value):
                problems.append(f"`{span}`: {key}={value} is refused by the schema")
        # `key: a | b` lists the values of a key
        m = re.fullmatch(r"([\w.]+): ([\w-]+(?: \| [\w-]+)*)", span)
        if m and KEY.match(m.group(1)) and key_exists(m.group(1)):
            for value in m.group(2).split(" | "):
                if not literal_key_value_ok(m.group(1), value):
                    problems.append(f"`{span}`: {m.group(1)}={value} is refused by the schema")
    assert checked > 40  # the README's keys were found
    assert not problems, "\n".join(problems)
